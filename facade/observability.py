"""Per request: one JSON log line and the request metrics; per TorchServe call: its latency.

The log line carries what is needed to follow a request through nginx, the facade and
TorchServe (the request ID) and to see how it went, never the text it classified.
Scrapes of /metrics are neither counted nor logged: they would swamp both.
"""

import json
import logging
import os
import time
from datetime import UTC, datetime

from flask import Flask, current_app, g, request
from werkzeug.exceptions import MethodNotAllowed

from facade.context import METRICS_KEY, metrics, predictor, request_id, settings
from facade.errors import ServiceError
from facade.info import VersionLabels, forget_served_version, served_version
from facade.metrics import Metrics
from facade.tracing import client_span

# Gunicorn's config gives this logger a handler that writes the bare message (one JSON object).
request_log = logging.getLogger("facade.requests")
UNMATCHED = "unmatched"
VERSION_LABELS_KEY = "facade.version_labels"
METRICS_ROUTE = "/metrics"


def install(app: Flask) -> None:
    """Give the app its metrics and time, count and log every request it answers."""
    app.extensions[METRICS_KEY] = Metrics()
    app.extensions[VERSION_LABELS_KEY] = VersionLabels()
    app.before_request(_started)
    app.after_request(_answered)
    app.teardown_request(_finished)


def classify(texts: list[str], options: dict) -> list[dict]:
    """Classify texts with the app's predictor, recording the call's latency, outcome and model version."""
    g.texts = len(texts)
    outcome = "internal_error"
    started = time.perf_counter()
    forget_served_version()
    try:
        with client_span("torchserve predictions"):
            results = predictor().classify(texts, request_id(), options)
        outcome = "ok"
        g.model_version = served_version()
        metrics().observe_model_answer(current_app.extensions[VERSION_LABELS_KEY].label(g.model_version))
        return results
    except ServiceError as exc:
        outcome = exc.code
        raise
    finally:
        seconds = time.perf_counter() - started
        g.torchserve_ms = round(seconds * 1000, 1)
        metrics().observe_torchserve(outcome, seconds)


def route_label() -> str:
    """Return the route template the request matched, or "unmatched"; never the raw path."""
    if request.url_rule is not None:
        return request.url_rule.rule
    # 405: the path is one of the app's (static) routes, only the method is wrong.
    if isinstance(request.routing_exception, MethodNotAllowed):
        rules = {rule.rule for rule in current_app.url_map.iter_rules()}
        if request.path in rules:
            return request.path
    return UNMATCHED


def _started() -> None:
    g.started = time.perf_counter()
    if route_label() != METRICS_ROUTE:
        metrics().in_progress.inc()
        g.in_progress = True


def _answered(response):
    route = route_label()
    if route == METRICS_ROUTE:
        return response
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    metrics().observe_request(route, request.method, response.status_code, seconds)
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": "request",
        "request_id": request_id(),
        "container_id": settings().container_id,
        "pid": os.getpid(),
        "method": request.method,
        "route": route,
        "status": response.status_code,
        "latency_ms": round(seconds * 1000, 1),
    }
    for key in ("texts", "torchserve_ms", "error_code", "model_version", "trace_id"):
        if key in g:
            line["error" if key == "error_code" else key] = g.get(key)
    request_log.info(json.dumps(line, ensure_ascii=False))
    return response


def _finished(_exc) -> None:
    if g.pop("in_progress", False):
        metrics().in_progress.dec()
