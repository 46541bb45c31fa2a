"""Metrics, logs and tracing of the whole native stack (TorchServe, two facades, nginx).

Counts are read as differences around the traffic each test sends: the stack is shared with
other modules.
"""

import json
import re
import time
import uuid

import pytest
import requests

pytestmark = pytest.mark.integration

MODEL = "sentiment"


def samples(text, name, **labels):
    """Return the values of every sample `name` in Prometheus text whose labels include `labels`."""
    values = []
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line.strip())
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            values.append(float(match.group(3)))
    return values


def facade_scrapes(stack):
    """Return the /metrics text of every facade, scraped on its own port (not through nginx)."""
    scrapes = []
    for port in stack.facade_ports:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        scrapes.append(response.text)
    return scrapes


def facade_total(stack, name, **labels):
    """Return a facade metric summed over every facade instance."""
    return sum(sum(samples(text, name, **labels)) for text in facade_scrapes(stack))


def torchserve_total(stack, name, **labels):
    """Return a TorchServe metric (its Prometheus metrics API) summed over matching samples."""
    response = requests.get(stack.torchserve.metrics_url + "/metrics", timeout=10)
    assert response.status_code == 200
    return sum(samples(response.text, name, **labels))


def eventually(check, timeout_s=10.0):
    """Return check()'s first truthy value within timeout_s (logs and counters land just after a response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


FACADE_COUNTS = {
    "classified": ("facade_requests_total", {"route": "/", "method": "POST", "status": "200"}),
    "rejected": ("facade_requests_total", {"route": "/", "method": "POST", "status": "400"}),
    "health": ("facade_requests_total", {"route": "/healthz", "method": "GET", "status": "200"}),
    "timed_root": ("facade_request_duration_seconds_count", {"route": "/"}),
    "torchserve_ok": ("facade_torchserve_request_duration_seconds_count", {"outcome": "ok"}),
}


def facade_counts(stack):
    return {key: facade_total(stack, name, **labels) for key, (name, labels) in FACADE_COUNTS.items()}


def test_metrics_of_facades_and_torchserve_count_exactly_the_traffic_sent(shared_stack):
    stack = shared_stack
    before = facade_counts(stack)
    ts_before = torchserve_total(stack, "ts_inference_requests_total", model_name=MODEL)

    for index in range(7):
        body = {"text": f"review {index}"} if index % 2 else {"texts": [f"review {index}", "and another"]}
        assert requests.post(stack.url, json=body, timeout=30).status_code == 200
    for _ in range(3):
        assert requests.get(stack.url + "healthz", timeout=10).status_code == 200
    invalid = requests.post(stack.url, data=b'{"text": ', headers={"Content-Type": "application/json"}, timeout=10)
    empty = requests.post(stack.url, json={"text": "   "}, timeout=10)
    assert (invalid.status_code, empty.status_code) == (400, 400)

    after = facade_counts(stack)
    delta = {key: after[key] - before[key] for key in after}
    assert delta == {"classified": 7, "rejected": 2, "health": 3, "timed_root": 9, "torchserve_ok": 7}
    assert facade_total(stack, "facade_requests_in_progress") == 0
    # Only the 7 valid requests reached TorchServe, one inference request each.
    reached = eventually(
        lambda: torchserve_total(stack, "ts_inference_requests_total", model_name=MODEL) - ts_before >= 7
    )
    assert reached
    assert torchserve_total(stack, "ts_inference_requests_total", model_name=MODEL) - ts_before == 7


def test_metrics_are_not_reachable_through_nginx(shared_stack):
    response = requests.get(f"http://127.0.0.1:{shared_stack.http_port}/metrics", timeout=10)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "facade_requests_total" not in response.text
    # Even a facade that was asked through a proxy keeps them to itself.
    port = shared_stack.facade_ports[0]
    proxied = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"X-Forwarded-For": "198.51.100.4"}, timeout=10)
    assert proxied.status_code == 404


def test_one_request_can_be_followed_through_nginx_facade_and_torchserve_logs(shared_stack):
    stack = shared_stack
    request_id = f"trace-{uuid.uuid4().hex}"
    private_text = f"private words {uuid.uuid4().hex}"

    response = requests.post(stack.url, json={"text": private_text}, headers={"X-Request-ID": request_id}, timeout=30)

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    container_id = response.headers["X-Container-ID"]
    (port,) = [port for port in stack.facade_ports if container_id.endswith(f"-{port}")]

    # nginx: the request ID, the facade that answered, and the times.
    def nginx_line():
        lines = (stack.log_dir / "nginx-access.log").read_text().splitlines()
        return next((line for line in lines if f"request_id={request_id} " in line), None)

    line = eventually(nginx_line)
    assert line, "no nginx access line with the request ID"
    assert f"upstream=127.0.0.1:{port} upstream_status=200 " in line
    assert re.search(r"upstream_time=\d+\.\d{3} request_time=\d+\.\d{3}$", line)
    assert '"POST / HTTP/1.1" 200' in line

    # The facade: one JSON line, in the log of the replica that answered.
    def facade_lines():
        text = (stack.log_dir / f"facade-{port}.log").read_text()
        found = [json.loads(line) for line in text.splitlines() if line.startswith("{") and request_id in line]
        return found or None

    (entry,) = eventually(facade_lines) or [None]
    assert entry is not None, "no facade JSON line with the request ID"
    assert entry["event"] == "request"
    assert (entry["container_id"], entry["route"], entry["status"], entry["texts"]) == (container_id, "/", 200, 1)
    assert entry["latency_ms"] >= entry["torchserve_ms"] >= 0

    # TorchServe: the handler logs the X-Request-ID the facade forwarded (model_log.log).
    def torchserve_line():
        lines = (stack.log_dir / "model_log.log").read_text().splitlines()
        return next((line for line in lines if f"request_id={request_id}" in line), None)

    assert eventually(torchserve_line), "TorchServe's model_log.log has no line with the forwarded request ID"

    # And no log anywhere holds the text itself.
    for log in stack.log_dir.glob("*.log"):
        assert private_text not in log.read_text(errors="replace"), log.name
