"""The facade under real Gunicorn, started from facade/gunicorn.conf.py, with TorchServe absent."""

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
import requests

from stack.private import free_port
from stack.processes import group_members, http_status, start_group, stop_group, wait_until

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "facade/gunicorn.conf.py"]
UNLOGGED_TEXT = "do-not-log-this-sentence"

pytestmark = pytest.mark.integration


@pytest.fixture
def facade(tmp_path):
    port, nothing_there = free_port(), free_port()
    environ = {
        **os.environ,
        "FACADE_PORT": str(port),
        "FACADE_WORKERS": "2",
        "FACADE_THREADS": "2",
        "FACADE_TORCHSERVE_URL": f"http://127.0.0.1:{nothing_there}",
        "FACADE_MAX_BODY_BYTES": "4096",
        "FACADE_RETRY_AFTER_S": "3",
    }
    environ.pop("FACADE_CONTAINER_ID", None)
    log_path = tmp_path / "gunicorn.log"
    process = start_group(GUNICORN, env=environ, log_path=log_path, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: http_status(base + "/healthz") == 200,
            timeout_s=15,
            what="gunicorn",
            log_path=log_path,
            process=process,
        )
        yield base, port, log_path
    finally:
        assert stop_group(process.pid, timeout_s=15), "a Gunicorn process outlived the master"
        process.wait(timeout=5)
        assert group_members(process.pid) == []
        assert UNLOGGED_TEXT not in log_path.read_text()


def test_gunicorn_serves_the_facade_without_torchserve(facade):
    base, port, _ = facade

    health = requests.get(base + "/healthz", timeout=5)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "container_id": health.headers["X-Container-ID"]}
    expected_id = socket.gethostname() if os.path.exists("/.dockerenv") else f"{socket.gethostname()}-{port}"
    assert health.headers["X-Container-ID"] == expected_id

    ready = requests.get(base + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == "3"

    bad = requests.post(base + "/", data=b'{"text": ', headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_json"

    down = requests.post(base + "/", json={"text": UNLOGGED_TEXT}, headers={"X-Request-ID": "it-1"}, timeout=5)
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "backend_unavailable"
    assert down.headers["X-Request-ID"] == "it-1"

    chunked = requests.post(
        base + "/",
        data=iter([b'{"text": "', b"x" * 8192, b'"}']),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "payload_too_large"

    page = requests.get(base + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["X-Container-ID"] in page.text


def metric(text, name, **labels):
    """Return the value of one sample of the Prometheus text `text`, 0 when absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(key) == value for key, value in labels.items()):
                return float(match.group(3))
    return 0.0


def request_lines(log_path):
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_metrics_add_up_every_worker_and_each_request_logs_one_json_line(facade):
    base, _, log_path = facade
    before = requests.get(base + "/metrics", timeout=5).text  # the fixture's readiness polls counted too
    already = metric(before, "facade_requests_total", route="/healthz", method="GET", status="200")
    # A new connection per request lets both workers take some of them.
    for index in range(6):
        assert requests.get(base + "/healthz", headers={"X-Request-ID": f"h-{index}"}, timeout=5).status_code == 200
    for index in range(3):
        bad = requests.post(base + "/", json={"text": " "}, headers={"X-Request-ID": f"b-{index}"}, timeout=5)
        assert bad.status_code == 400
    for index in range(2):
        down = requests.post(
            base + "/", json={"text": UNLOGGED_TEXT}, headers={"X-Request-ID": f"d-{index}"}, timeout=5
        )
        assert down.status_code == 503

    scrapes = [requests.get(base + "/metrics", timeout=5) for _ in range(6)]

    for scrape in scrapes:
        text = scrape.text
        assert scrape.headers["Content-Type"].startswith("text/plain")
        assert metric(text, "facade_requests_total", route="/healthz", method="GET", status="200") == already + 6
        assert metric(text, "facade_requests_total", route="/", method="POST", status="400") == 3
        assert metric(text, "facade_requests_total", route="/", method="POST", status="503") == 2
        assert metric(text, "facade_request_duration_seconds_count", route="/") == 5
        assert metric(text, "facade_torchserve_request_duration_seconds_count", outcome="backend_unavailable") == 2
        assert metric(text, "facade_requests_in_progress") == 0
        assert "_created" not in text  # multiprocess mode: values come from the workers' files
    proxied = requests.get(base + "/metrics", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=5)
    assert proxied.status_code == 404

    lines = [line for line in request_lines(log_path) if line["request_id"][:2] in ("h-", "b-", "d-")]
    ids = [line["request_id"] for line in lines]
    expected = [f"h-{i}" for i in range(6)] + [f"b-{i}" for i in range(3)] + [f"d-{i}" for i in range(2)]
    assert ids == expected  # one line each
    assert len(request_lines(log_path)) == already + len(expected)  # and none for the scrapes
    assert {line["status"] for line in lines if line["request_id"].startswith("d-")} == {503}
    assert all(line["container_id"] == lines[0]["container_id"] for line in lines)


def test_gunicorn_removes_its_metrics_folder_when_it_stops(tmp_path):
    port = free_port()
    environ = {**os.environ, "FACADE_PORT": str(port), "FACADE_WORKERS": "2", "FACADE_THREADS": "2"}
    environ.pop("FACADE_METRICS_DIR", None)
    log_path = tmp_path / "gunicorn.log"
    process = start_group(GUNICORN, env=environ, log_path=log_path, cwd=ROOT)
    try:
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200,
            timeout_s=15,
            what="gunicorn",
            log_path=log_path,
            process=process,
        )
        folder = Path(re.search(r"files in (\S+)\)", log_path.read_text()).group(1))
        assert folder.is_dir()
        assert folder.name.startswith("facade-metrics-")
        assert any(folder.glob("counter_*.db"))
    finally:
        assert stop_group(process.pid, timeout_s=15)
        process.wait(timeout=5)
    assert not folder.exists()
