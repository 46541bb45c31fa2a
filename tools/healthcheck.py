"""Docker HEALTHCHECK of the TorchServe image: exit 0 when the model has a READY worker.

TorchServe's /ping counts workers that are still loading as healthy, so this asks the management
API (TORCHSERVE_MANAGEMENT_URL, default http://127.0.0.1:8091) about MODEL_NAME (sentiment).
"""

import os
import sys

import requests

from scale_workers import ScaleError, describe_model, ready_workers


def main(environ=os.environ):
    """Print the worker states; return 0 when at least one worker is READY, else 1."""
    url = (environ.get("TORCHSERVE_MANAGEMENT_URL") or "http://127.0.0.1:8091").rstrip("/")
    model = environ.get("MODEL_NAME") or "sentiment"
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
