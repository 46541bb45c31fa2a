"""Docker HEALTHCHECK of the TorchServe image: exit 0 when the model has a READY worker.

TorchServe's /ping counts workers that are still loading as healthy, so this asks the management
API (TORCHSERVE_MANAGEMENT_URL) about MODEL_NAME; both default to what config.properties says
(management_address, TS_MANAGEMENT_ADDRESS applied, and load_models). It runs inside the
TorchServe container, the one place that reaches the management API's socket.
"""

import os
import sys

import requests

from tools.management import default_address
from tools.scale_workers import ScaleError, default_model_name, describe_model, ready_workers


def main(environ=os.environ):
    """Print the worker states; return 0 when at least one worker is READY, else 1."""
    url = default_address(environ).rstrip("/")
    model = default_model_name(environ)
    try:
        description = describe_model(url, model)
    except (ScaleError, requests.RequestException, ValueError, LookupError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    states = [worker["status"] for worker in description.get("workers", [])]
    ready = len(ready_workers(description))
    print(f"{model}: {ready} READY of {len(states)} workers {states}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
