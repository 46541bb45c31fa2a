"""Prometheus metrics of the facade, correct across Gunicorn's worker processes.

Under Gunicorn, facade/gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh private
folder before any worker starts: every worker writes its values to files there and a scrape,
answered by whichever worker gets it, adds up the files of all of them. Without that variable
(tests, `flask run`) each app keeps its values in its own registry.

prometheus_client picks its storage when it is first imported, so nothing that the Gunicorn
master imports before its workers start may import this module (facade/__init__.py imports it
inside create_app).
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# From a few milliseconds (errors, health) up to the facade's read timeout (15 s) and past it.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, float("inf"))
# Methods a client may send are unbounded; anything else is counted as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Metrics:
    """The facade's metrics: requests by route and status, in-flight requests, TorchServe calls."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "facade_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "facade_request_duration_seconds",
            "Time from reading a request to handing back its response, by route template.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "facade_requests_in_progress",
            "Requests being answered right now (summed over live workers).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.torchserve_duration = Histogram(
            "facade_torchserve_request_duration_seconds",
            "Time of each call to TorchServe's inference API, by outcome (ok or the error code it led to).",
            ["outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )

        self.model_answers = Counter(
            "facade_model_answers",
            "Answers of the model, by the archive version that produced them (X-Model-Version; at most 8 "
            "versions per process, then other).",
            ["model_version"],
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        method = method if method in METHODS else "OTHER"
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.request_duration.labels(route=route).observe(seconds)

    def observe_torchserve(self, outcome: str, seconds: float) -> None:
        """Record one call to TorchServe."""
        self.torchserve_duration.labels(outcome=outcome).observe(seconds)

    def observe_model_answer(self, version_label: str) -> None:
        """Count one answer of the model, by its archive version's label value."""
        self.model_answers.labels(model_version=version_label).inc()

    def exposition(self) -> tuple[bytes, str]:
        """Return the Prometheus text exposition of every worker's values, and its content type."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return generate_latest(registry), CONTENT_TYPE_LATEST
