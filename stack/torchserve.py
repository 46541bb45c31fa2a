"""Run TorchServe natively with the project's config.properties (used by `make up` and tests)."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from stack.processes import StartupError, start_group, stop_group, wait_until
from tools import torchserve_config
from tools.management import prepare_socket
from tools.scale_workers import ScaleError, describe_model, ready_workers

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The defaults are config.properties' own: TorchServe's file is the one home of its ports and model name.
CONFIG = torchserve_config.properties()
# Where in the run dir the management API's socket lives (config.properties' default, in `run`).
MANAGEMENT_SOCKET = Path("management", "management.sock")


@dataclass(frozen=True)
class TorchServeSettings:
    """Where one native TorchServe listens and keeps its files."""

    inference_port: int = torchserve_config.port(CONFIG, "inference_address")
    metrics_port: int = torchserve_config.port(CONFIG, "metrics_address")
    grpc_inference_port: int = int(CONFIG["grpc_inference_port"])
    grpc_management_port: int = int(CONFIG["grpc_management_port"])
    model_name: str = torchserve_config.model_name(CONFIG)
    model_store: Path = PROJECT_DIR / "model-store"
    config_file: Path = torchserve_config.CONFIG_FILE
    run_dir: Path = PROJECT_DIR / "run"
    log_dir: Path = PROJECT_DIR / "logs"

    @property
    def inference_url(self):
        """Return the base URL of the inference API."""
        return f"http://127.0.0.1:{self.inference_port}"

    @property
    def predictions_url(self):
        """Return the URL that classifies with the served model (POST)."""
        return f"{self.inference_url}/predictions/{self.model_name}"

    @property
    def management_socket(self):
        """Return the management API's Unix socket (its folder, mode 0700, is this user's alone)."""
        return self.run_dir / MANAGEMENT_SOCKET

    @property
    def management_url(self):
        """Return the management API's address as TorchServe and tools/management.py take it."""
        return f"unix:{self.management_socket}"

    @property
    def metrics_url(self):
        """Return the base URL of the Prometheus metrics API."""
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def log_path(self):
        """Return the file that collects TorchServe's console output."""
        return self.log_dir / "torchserve.log"


def torchserve_env(settings, base_env=os.environ):
    """Return the environment that points config.properties at this instance's ports and dirs."""
    tmp_dir = settings.run_dir / "torchserve-tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return {
        **base_env,
        # config.properties has enable_envvars_config=true, so TS_<KEY> overrides <key>.
        "TS_INFERENCE_ADDRESS": settings.inference_url,
        "TS_MANAGEMENT_ADDRESS": settings.management_url,
        "TS_METRICS_ADDRESS": settings.metrics_url,
        "TS_GRPC_INFERENCE_PORT": str(settings.grpc_inference_port),
        "TS_GRPC_MANAGEMENT_PORT": str(settings.grpc_management_port),
        # The launcher keeps its pid file in $TMPDIR: one per instance lets several run side by side.
        "TMPDIR": str(tmp_dir),
        "LOG_LOCATION": str(settings.log_dir),
        "METRICS_LOCATION": str(settings.log_dir),
    }


def prepare_management_socket(settings):
    """Make the socket's folder (mode 0700) and remove a stale socket, or say to move RUN_DIR."""
    try:
        prepare_socket(settings.management_url)
    except ValueError as exc:
        raise StartupError(f"TorchServe's management API: {exc}: set RUN_DIR to a shorter folder") from None


def torchserve_command(settings):
    """Return the command that runs TorchServe in the foreground (so its group can be stopped)."""
    launcher = Path(sys.executable).parent / "torchserve"
    return [
        str(launcher),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(settings.config_file),
        "--model-store",
        str(settings.model_store),
    ]


def ready_worker_count(settings, timeout_s=2.0):
    """Return how many workers of the model are READY (0 when TorchServe does not answer)."""
    try:
        description = describe_model(settings.management_url, settings.model_name, timeout_s)
    except (ScaleError, requests.RequestException, ValueError, LookupError):
        return 0
    return len(ready_workers(description))


def start_torchserve(settings, timeout_s=180.0, progress_every_s=None):
    """Start TorchServe and wait until the model has a READY worker; return the Popen."""
    if not (settings.model_store / f"{settings.model_name}.mar").is_file():
        raise FileNotFoundError(f"{settings.model_store}/{settings.model_name}.mar is missing: run `make mar`")
    prepare_management_socket(settings)
    process = start_group(
        torchserve_command(settings),
        env=torchserve_env(settings),
        log_path=settings.log_path,
        cwd=PROJECT_DIR,
    )
    wait_until(
        lambda: ready_worker_count(settings) > 0,
        timeout_s=timeout_s,
        what=f"TorchServe (a READY worker of model '{settings.model_name}')",
        log_path=settings.log_path,
        process=process,
        progress_every_s=progress_every_s,
    )
    return process


def stop_torchserve(pgid, timeout_s=30.0):
    """Stop TorchServe cleanly: SIGTERM to Java, which stops its workers; the launcher then exits.

    The launcher does not pass signals on, and signalling it first would orphan Java.
    """
    return stop_group(pgid, timeout_s=timeout_s, children_first=True)
