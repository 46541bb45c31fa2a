"""Real servers on loopback: private stacks on free ports (stack/private.py), stopped with nothing left behind."""

import subprocess

import pytest

from facade.auth import key_hash
from stack.launcher import down, record, running_groups, up
from stack.models import PROJECT_DIR, TEST_MODEL_DIR, has_test_model
from stack.private import build_archive, private_stack, private_torchserve
from stack.processes import group_members
from stack.torchserve import start_torchserve, stop_torchserve


def started_stack(work_dir, model_dir, started):
    """Start a whole private stack serving `model_dir` under `work_dir`; add its servers to `started`."""
    settings = private_stack(work_dir)
    build_archive(model_dir, settings.torchserve.model_store)
    started.extend(up(settings).values())
    return settings


def record_restarted(settings, name, process, started):
    """Record a server restarted by a test in the stack's state so that `down` stops it; add it to `started`."""
    started.append(process)
    groups = running_groups(settings)
    groups[name] = process.pid
    record(settings, groups)


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


@pytest.fixture(scope="module")
def running_torchserve(tmp_path_factory):
    """Start TorchServe on a model dir; stop every process of it when the module ends."""
    started = []

    def start(model_dir):
        settings = private_torchserve(tmp_path_factory.mktemp("torchserve"))
        build_archive(model_dir, settings.model_store)
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
    return TEST_MODEL_DIR if has_test_model() else tiny_model_dir


@pytest.fixture(scope="package")
def shared_stack(tmp_path_factory, serving_model_dir):
    """One whole native stack for the modules that only send traffic and read what it left.

    Modules that stop or kill its servers start their own. Counts read from it must be taken
    as differences: every module using it adds traffic.
    """
    started = []
    settings = started_stack(tmp_path_factory.mktemp("shared-stack"), serving_model_dir, started)
    yield settings
    stop_stack(settings, started)


# The key a keyed stack takes (its file holds the key's hash only).
API_KEY = "integration-key-0123456789-abcdefghijklmnopqrstuvw"


@pytest.fixture(scope="package")
def keyed_stack(tmp_path_factory, serving_model_dir):
    """A whole native stack started with API keys on (FACADE_API_KEYS_FILE), for the key tests and the browser."""
    work_dir = tmp_path_factory.mktemp("keyed-stack")
    keys_file = work_dir / "api-keys"
    keys_file.write_text(key_hash(API_KEY) + "\n")
    started = []
    # The replicas take their FACADE_* settings from the environment they are started in.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACADE_API_KEYS_FILE", str(keys_file))
        settings = started_stack(work_dir, serving_model_dir, started)
    yield settings
    stop_stack(settings, started)


@pytest.fixture(scope="module")
def two_torchserves(tmp_path_factory, serving_model_dir):
    """[(settings, process)] of two TorchServes serving one archive, each on its own ports."""
    store = tmp_path_factory.mktemp("model-store")
    build_archive(serving_model_dir, store)
    started = []
    try:
        for _ in range(2):
            settings = private_torchserve(tmp_path_factory.mktemp("torchserve"), store)
            started.append((settings, start_torchserve(settings)))
        yield started
    finally:
        for _, process in started:
            stop_torchserve(process.pid)
            process.wait(timeout=10)
            assert group_members(process.pid) == []
