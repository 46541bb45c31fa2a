"""Real servers on loopback: free ports, start, and stop with nothing left behind."""

import socket
import subprocess

import pytest

from stack.launcher import StackSettings, down, running_groups, up
from stack.processes import group_members, http_status
from stack.torchserve import TorchServeSettings, start_torchserve, stop_torchserve
from tests.conftest import PROJECT_DIR, STANDIN_MODEL_DIR
from tools.build_mar import BuildSettings, build


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


def free_port_pair():
    """Return a port p such that p and p + 1 are both free on loopback."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and http_status(f"http://127.0.0.1:{port + 1}/", timeout_s=0.2) is None:
            return port
    raise RuntimeError("no two consecutive free ports found")


def stack_settings(tmp_path):
    """Return settings for a private native stack (two facades) on free ports under `tmp_path`."""
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    return StackSettings(
        http_port=free_port(),
        replicas=2,
        facade_base_port=free_port_pair(),
        torchserve=torchserve_settings(tmp_path),  # same run, log and store folders
        run_dir=run_dir,
        log_dir=log_dir,
    )


def stop_stack(settings, processes):
    """Stop a whole stack, reap the servers started for it, and check no process of it is left."""
    groups = running_groups(settings)
    down(settings, quiet=True)
    for process in processes:
        process.wait(timeout=10)  # reaped already when its group was stopped earlier: returns at once
    for pgid in groups.values():
        assert group_members(pgid) == []


def run_make(*arguments, env):
    """Run a make target of the project as a user would; return the finished process."""
    return subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
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


@pytest.fixture(scope="package")
def serving_model_dir(tiny_model_dir):
    """The trained stand-in when ../shared has it (labels mean something), else the tiny model."""
    return STANDIN_MODEL_DIR if (STANDIN_MODEL_DIR / "config.json").is_file() else tiny_model_dir


@pytest.fixture(scope="package")
def shared_stack(tmp_path_factory, serving_model_dir):
    """One whole native stack for the modules that only send traffic and read what it left.

    Modules that stop or kill its servers start their own. Counts read from it must be taken
    as differences: every module using it adds traffic.
    """
    settings = stack_settings(tmp_path_factory.mktemp("shared-stack"))
    build_archive(serving_model_dir, settings.torchserve)
    processes = up(settings)
    yield settings
    stop_stack(settings, processes.values())
