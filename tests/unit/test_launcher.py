"""The native launcher's checks before and while it starts the stack: no servers are started."""

import socket
import time

import pytest

from stack.launcher import StackSettings, bound_ports, check_ports
from stack.processes import StartupError, wait_until


def test_every_port_the_stack_binds_has_a_setting_that_moves_it():
    settings = StackSettings.from_env({"REPLICAS": "2"})
    settings_named = {setting for _, setting, _ in bound_ports(settings)}
    assert settings_named == {
        "HTTP_PORT",
        "FACADE_BASE_PORT",
        "TORCHSERVE_INFERENCE_PORT",
        "TORCHSERVE_MANAGEMENT_PORT",
        "TORCHSERVE_METRICS_PORT",
        "TORCHSERVE_GRPC_INFERENCE_PORT",
        "TORCHSERVE_GRPC_MANAGEMENT_PORT",
    }
    # Two facades, nginx and TorchServe's five ports, all different.
    ports = [port for port, _, _ in bound_ports(settings)]
    assert len(ports) == len(set(ports)) == 8


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


def test_waiting_says_what_it_waits_for_every_few_seconds(capsys):
    ready_at = time.monotonic() + 1.2
    wait_until(
        lambda: time.monotonic() >= ready_at, timeout_s=10, what="the thing", log_path="x.log", progress_every_s=0.5
    )
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("waiting for the thing: ") and line.endswith("(log: x.log)") for line in lines)


def test_waiting_is_silent_without_a_progress_interval(capsys):
    ready_at = time.monotonic() + 0.6
    wait_until(lambda: time.monotonic() >= ready_at, timeout_s=10, what="the thing", log_path="x.log")
    assert capsys.readouterr().err == ""
