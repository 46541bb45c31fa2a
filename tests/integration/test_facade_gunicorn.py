"""The facade under real Gunicorn, started from facade/gunicorn.conf.py, with TorchServe absent."""

import os
import socket
import sys
from pathlib import Path

import pytest
import requests

from scripts.processes import group_members, http_status, start_group, stop_group, wait_until
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
UNLOGGED_TEXT = "do-not-log-this-sentence"

pytestmark = pytest.mark.integration


@pytest.fixture
def facade(tmp_path):
    port, nothing_there = free_port(), free_port()
    environ = {
        **os.environ,
        "FACADE_PORT": str(port),
        "FACADE_WORKERS": "1",
        "FACADE_THREADS": "2",
        "FACADE_TORCHSERVE_URL": f"http://127.0.0.1:{nothing_there}",
        "FACADE_TORCHSERVE_MANAGEMENT_URL": f"http://127.0.0.1:{nothing_there}",
        "FACADE_MAX_BODY_BYTES": "4096",
        "FACADE_RETRY_AFTER_S": "3",
    }
    environ.pop("FACADE_CONTAINER_ID", None)
    log_path = tmp_path / "gunicorn.log"
    gunicorn = Path(sys.executable).parent / "gunicorn"
    process = start_group([str(gunicorn), "-c", "facade/gunicorn.conf.py"], env=environ, log_path=log_path, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: http_status(base + "/healthz") == 200,
            timeout_s=15,
            what="gunicorn",
            log_path=log_path,
            process=process,
        )
        yield base, port
    finally:
        assert stop_group(process.pid, timeout_s=15), "a Gunicorn process outlived the master"
        process.wait(timeout=5)
        assert group_members(process.pid) == []
        assert UNLOGGED_TEXT not in log_path.read_text()


def test_gunicorn_serves_the_facade_without_torchserve(facade):
    base, port = facade

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
