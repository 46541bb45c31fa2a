"""Real servers on loopback: free ports, start, and stop with nothing left behind."""

import socket

import pytest
from build_mar import BuildSettings, build

from scripts.processes import group_members
from scripts.torchserve import TorchServeSettings, start_torchserve, stop_torchserve


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchserve_settings(tmp_path):
    """Return settings for a private TorchServe (own ports, store, logs) under `tmp_path`."""
    return TorchServeSettings(
        inference_port=free_port(),
        management_port=free_port(),
        metrics_port=free_port(),
        grpc_inference_port=free_port(),
        grpc_management_port=free_port(),
        model_store=tmp_path / "model-store",
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "logs",
    )


def build_archive(model_dir, settings):
    """Build the project's .mar from `model_dir` into the instance's model store."""
    build(BuildSettings.from_env({"MODEL_DIR": str(model_dir), "MODEL_STORE": str(settings.model_store)}))


@pytest.fixture(scope="module")
def running_torchserve(tmp_path_factory):
    """Start TorchServe on a model dir; stop every process of it when the module ends."""
    started = []

    def start(model_dir):
        settings = torchserve_settings(tmp_path_factory.mktemp("torchserve"))
        build_archive(model_dir, settings)
        started.append(start_torchserve(settings))
        return settings

    yield start
    for process in started:
        stop_torchserve(process.pid)
        process.wait(timeout=10)
        assert group_members(process.pid) == []
