"""Metrics and the JSON log line: what each request adds, and what never appears."""

import json
import logging
import re

import pytest

from facade.errors import UpstreamTimeoutError, UpstreamUnavailableError

PRIVATE_TEXT = "good secret words"


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def sample(text: str, name: str, **labels) -> float:
    """Return the value of the sample `name` whose labels include `labels` (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return 0.0


@pytest.fixture
def request_lines(caplog):
    """Return a function giving the JSON request lines logged so far."""
    caplog.set_level(logging.INFO, logger="facade.requests")

    def lines():
        return [json.loads(record.getMessage()) for record in caplog.records if record.name == "facade.requests"]

    return lines


def test_requests_are_counted_by_route_template_method_and_status(client):
    client.post("/", json={"text": "good"})
    client.post("/", json={"text": "good"})
    client.post("/", json={"text": ""})
    client.get("/healthz")
    client.get("/no/such/path/42")
    client.put("/readyz")
    client.open("/", method="BREW")

    text = scrape(client)

    assert sample(text, "facade_requests_total", route="/", method="POST", status="200") == 2
    assert sample(text, "facade_requests_total", route="/", method="POST", status="400") == 1
    assert sample(text, "facade_requests_total", route="/healthz", method="GET", status="200") == 1
    assert sample(text, "facade_requests_total", route="unmatched", method="GET", status="404") == 1
    assert sample(text, "facade_requests_total", route="/readyz", method="PUT", status="405") == 1
    assert sample(text, "facade_requests_total", route="/", method="OTHER", status="405") == 1
    assert "/no/such/path" not in text
    assert sample(text, "facade_request_duration_seconds_count", route="/") == 4
    assert sample(text, "facade_request_duration_seconds_count", route="unmatched") == 1


def test_scrapes_are_neither_counted_nor_logged(client, request_lines):
    scrape(client)
    text = scrape(client)

    assert 'route="/metrics"' not in text
    assert request_lines() == []


def test_in_progress_gauge_counts_the_request_being_answered_and_returns_to_zero(client, predictor, app):
    seen = []
    real_classify = predictor.classify

    def classify(texts, request_id, options=None):
        seen.append(sample(app.test_client().get("/metrics").get_data(as_text=True), "facade_requests_in_progress"))
        return real_classify(texts, request_id)

    predictor.classify = classify
    client.post("/", json={"text": "good"})

    assert seen == [1.0]
    assert sample(scrape(client), "facade_requests_in_progress") == 0.0


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (UpstreamUnavailableError("down"), "backend_unavailable"),
        (UpstreamTimeoutError("slow"), "backend_timeout"),
    ],
)
def test_torchserve_calls_are_timed_by_outcome(client, predictor, error, outcome):
    predictor.error = error
    client.post("/", json={"texts": ["good", "bad"]})
    client.post("/", data={"text": "good"})
    client.post("/", json={"text": ""})  # rejected before any call

    text = scrape(client)

    assert sample(text, "facade_torchserve_request_duration_seconds_count", outcome=outcome) == 2
    assert sample(text, "facade_torchserve_request_duration_seconds_bucket", outcome=outcome, le="+Inf") == 2


def test_metrics_refuse_requests_that_came_through_a_proxy(client):
    for header in ("X-Forwarded-For", "X-Real-IP"):
        response = client.get("/metrics", headers={header: "203.0.113.9"})

        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


def test_one_json_line_per_request_with_ids_status_latency_and_count_never_the_text(client, request_lines):
    client.post("/", json={"texts": [PRIVATE_TEXT, "bad"]}, headers={"X-Request-ID": "trace-1"})
    client.post("/", data={"text": PRIVATE_TEXT}, headers={"X-Request-ID": "trace-2"})
    client.post("/", json={"text": PRIVATE_TEXT, "texts": [PRIVATE_TEXT]}, headers={"X-Request-ID": "trace-3"})
    client.get("/healthz", headers={"X-Request-ID": "trace-4"})
    client.get("/missing", headers={"X-Request-ID": "trace-5"})

    lines = request_lines()

    assert [line["request_id"] for line in lines] == ["trace-1", "trace-2", "trace-3", "trace-4", "trace-5"]
    assert all(line["event"] == "request" and line["container_id"] == "test-box" for line in lines)
    assert all(isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0 for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"]) for line in lines)
    first, form, conflict, health, missing = lines
    assert (first["method"], first["route"], first["status"], first["texts"]) == ("POST", "/", 200, 2)
    assert first["torchserve_ms"] >= 0
    assert (form["status"], form["texts"]) == (200, 1)
    assert (conflict["status"], conflict["error"]) == (400, "conflicting_fields")
    assert "texts" not in conflict and "torchserve_ms" not in conflict
    assert (health["route"], health["status"]) == ("/healthz", 200)
    assert (missing["route"], missing["status"], missing["error"]) == ("unmatched", 404, "not_found")
    assert "secret" not in json.dumps(lines)


def test_failed_form_post_logs_its_error_code(client, predictor, request_lines):
    predictor.error = UpstreamUnavailableError("down")

    client.post("/", data={"text": "good"})

    (line,) = request_lines()
    assert (line["status"], line["error"], line["texts"]) == (503, "backend_unavailable", 1)
