"""The native launcher's checks before and while it starts the stack: no servers are started."""

import socket
import stat

import pytest

from stack.launcher import StackSettings, bound_ports, check_ports
from stack.processes import StartupError, wait_until
from stack.torchserve import TorchServeSettings, prepare_management_socket


def test_every_port_the_stack_binds_has_a_setting_that_moves_it():
    settings = StackSettings.from_env({"REPLICAS": "2"})
    settings_named = {setting for _, setting, _ in bound_ports(settings)}
    assert settings_named == {
        "HTTP_PORT",
        "FACADE_BASE_PORT",
        "TORCHSERVE_INFERENCE_PORT",
        "TORCHSERVE_METRICS_PORT",
        "TORCHSERVE_GRPC_INFERENCE_PORT",
        "TORCHSERVE_GRPC_MANAGEMENT_PORT",
    }
    # Two facades, nginx and TorchServe's four ports, all different (management is a Unix socket).
    ports = [port for port, _, _ in bound_ports(settings)]
    assert len(ports) == len(set(ports)) == 7


def test_the_management_socket_gets_a_folder_only_its_user_may_enter_and_no_stale_socket(tmp_path):
    settings = TorchServeSettings(run_dir=tmp_path / "run")
    folder = settings.management_socket.parent
    folder.mkdir(parents=True, mode=0o755)
    settings.management_socket.write_text("left by a killed TorchServe")

    prepare_management_socket(settings)

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not settings.management_socket.exists()
    assert settings.management_url == f"unix:{tmp_path}/run/management/management.sock"


def test_a_run_dir_too_long_for_a_unix_socket_stops_the_start_naming_run_dir(tmp_path):
    settings = TorchServeSettings(run_dir=tmp_path / ("r" * 100))

    with pytest.raises(StartupError, match="set RUN_DIR to a shorter folder"):
        prepare_management_socket(settings)


def test_a_taken_port_stops_up_with_the_setting_that_moves_it():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = StackSettings.from_env({"TORCHSERVE_GRPC_INFERENCE_PORT": str(taken)})
        with pytest.raises(StartupError) as raised:
            check_ports(settings)
    assert f"port {taken} (TorchServe gRPC inference): move it with TORCHSERVE_GRPC_INFERENCE_PORT=" in str(
        raised.value
    )


class FakeClock:
    """A clock for stack.processes that moves only when the code sleeps: the test's timing is exact."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr("stack.processes.time", fake)
    return fake


def test_waiting_says_what_it_waits_for_every_few_seconds(capsys, clock):
    wait_until(lambda: clock.now >= 1.2, timeout_s=10, what="the thing", log_path="x.log", progress_every_s=0.5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("waiting for the thing: ") and line.endswith("(log: x.log)") for line in lines)


def test_waiting_is_silent_without_a_progress_interval(capsys, clock):
    wait_until(lambda: clock.now >= 0.6, timeout_s=10, what="the thing", log_path="x.log")
    assert capsys.readouterr().err == ""
