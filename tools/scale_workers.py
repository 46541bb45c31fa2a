"""Scale the TorchServe workers of a model through the management API and wait until ready.

Usage: python -m tools.scale_workers N [--url ADDRESS] [--model NAME] [--timeout SECONDS]

Defaults come from TORCHSERVE_MANAGEMENT_URL and MODEL_NAME, else from config.properties
(management_address, TS_MANAGEMENT_ADDRESS applied, and load_models). The address is the
management API's Unix socket (unix:/path/to.sock) or an http:// URL (tools/management.py).
Exits non-zero if the workers are not all READY within the timeout.
"""

import argparse
import os
import sys
import time

import requests

from tools import management
from tools.torchserve_config import model_name, properties


class ScaleError(RuntimeError):
    """Scaling failed; the message says why."""


def describe_model(url, model, timeout_s=10.0):
    """Return TorchServe's description of the model (the first entry of GET /models/<model>)."""
    response = management.request(url, "GET", f"/models/{model}", timeout=timeout_s)
    if response.status_code != 200:
        raise ScaleError(f"GET /models/{model} answered {response.status_code}: {response.text.strip()}")
    return response.json()[0]


def ready_workers(description):
    """Return the workers TorchServe reports READY (loaded and serving)."""
    return [worker for worker in description["workers"] if worker["status"] == "READY"]


def request_scale(url, model, workers):
    """Ask TorchServe for exactly `workers` workers; return its status message.

    Asynchronously: a synchronous scale holds one of TorchServe's network threads until the workers
    are up, and every inference connection served by that thread waits as long (wait_for_workers
    polls instead)."""
    response = management.request(
        url,
        "PUT",
        f"/models/{model}",
        params={"min_worker": workers, "max_worker": workers, "synchronous": "false"},
        timeout=300,
    )
    if response.status_code not in (200, 202, 206):
        raise ScaleError(f"PUT /models/{model} answered {response.status_code}: {response.text.strip()}")
    return response.json().get("status", "")


def wait_for_workers(url, model, workers, timeout_s):
    """Poll until exactly `workers` workers exist and all are READY; return the description."""
    deadline = time.monotonic() + timeout_s
    while True:
        description = describe_model(url, model)
        # The scale is asynchronous: the new workers load after TorchServe has answered.
        if len(description["workers"]) == workers and len(ready_workers(description)) == workers:
            return description
        if time.monotonic() > deadline:
            states = [worker["status"] for worker in description["workers"]]
            raise ScaleError(f"{model}: wanted {workers} READY workers within {timeout_s}s, have {states}")
        time.sleep(0.5)


def default_model_name(environ):
    """Return MODEL_NAME, else the model config.properties loads."""
    return environ.get("MODEL_NAME") or model_name(properties())


def worker_table(description):
    """Return the workers of a model description as aligned text lines."""
    lines = [f"{'ID':<6} {'PID':<8} {'STATUS':<10} {'MEMORY(MB)':>10}  STARTED"]
    for worker in description["workers"]:
        memory_mb = worker.get("memoryUsage", 0) / 1e6
        lines.append(
            f"{worker['id']:<6} {worker['pid']!s:<8} {worker['status']:<10} {memory_mb:>10.0f}  {worker['startTime']}"
        )
    return "\n".join(lines)


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workers", type=int, help="number of workers wanted (>= 1)")
    parser.add_argument("--url", default=management.default_address(os.environ))
    parser.add_argument("--model", default=default_model_name(os.environ))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for READY workers")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("workers must be at least 1 (0 would stop serving the model)")
    return args


def main(argv=None):
    """Scale, wait, print the worker table; exit 1 on failure."""
    args = parse_args(argv)
    url = args.url.rstrip("/")
    try:
        print(request_scale(url, args.model, args.workers))
        description = wait_for_workers(url, args.model, args.workers, args.timeout)
    except (ScaleError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(worker_table(description))
    return 0


if __name__ == "__main__":
    sys.exit(main())
