"""What the current request runs with: the app's settings and predictor, and the request ID."""

import uuid

from flask import current_app, g, request

from facade.settings import SAFE_ID, Settings

SETTINGS_KEY = "facade.settings"
PREDICTOR_KEY = "facade.predictor"
METRICS_KEY = "facade.metrics"
MODEL_INFO_KEY = "facade.model_info"
API_KEYS_KEY = "facade.api_keys"


def settings() -> Settings:
    """Return the settings the current app was created with."""
    return current_app.extensions[SETTINGS_KEY]


def predictor():
    """Return the current app's predictor (a TorchServeClient outside tests)."""
    return current_app.extensions[PREDICTOR_KEY]


def metrics():
    """Return the current app's Metrics."""
    return current_app.extensions[METRICS_KEY]


def api_keys_on() -> bool:
    """Return whether the current app requires API keys (facade/auth.py)."""
    return API_KEYS_KEY in current_app.extensions


def model_info():
    """Return the current app's ModelInfo cache (facade/info.py)."""
    return current_app.extensions[MODEL_INFO_KEY]


def request_id() -> str:
    """Return the client's X-Request-ID when it is safe to log and forward, else a new one."""
    if "request_id" not in g:
        g.request_id = _safe_request_id(request.headers.get("X-Request-ID", ""))
    return g.request_id


def _safe_request_id(candidate: str) -> str:
    # Anything else could smuggle log lines or header syntax into logs and TorchServe.
    return candidate if SAFE_ID.fullmatch(candidate) else uuid.uuid4().hex
