"""The whole native stack (TorchServe, two Gunicorn facades, nginx) checked through nginx."""

import os
import subprocess
import sys

import pytest
import requests

from stack.launcher import running_groups, start_facade
from stack.private import private_stack
from stack.processes import group_members, http_status, stop_group, wait_until
from stack.torchserve import start_torchserve, stop_torchserve
from tests.conftest import PROJECT_DIR, TEST_MODEL_DIR
from tests.integration.conftest import record_restarted, run_make, started_stack, stop_stack

pytestmark = pytest.mark.integration


# Servers (re)started by tests in this module, reaped when it ends.
STARTED = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory, serving_model_dir):
    settings = started_stack(tmp_path_factory.mktemp("stack"), serving_model_dir, STARTED)
    yield settings
    stop_stack(settings, STARTED)


def post(stack, body=None, headers=None):
    return requests.post(stack.url, json=body, headers=headers, timeout=30)


def test_one_text_gets_label_score_and_container_id(stack):
    response = post(stack, {"text": "It is worth it"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "score", "container_id"}
    assert body["label"] in {"POSITIVE", "NEGATIVE"}
    assert 0.5 <= body["score"] <= 1
    assert body["container_id"] == response.headers["X-Container-ID"]


# How far one text's score may move with the texts it shares a pass with: none in fp32; int8
# (PRECISION=auto's usual choice) quantizes activations with one scale per pass, so its
# neighbours move it a little (by 0.002 on the test model's seed sentences).
SCORE_TOLERANCE = {"fp32": 1e-4, "int8": 0.02}


def test_many_texts_come_back_in_input_order(stack):
    texts = ["It is worth it", "It is a waste of time and money", "fine", "dreadful and dull"]
    batch = post(stack, {"texts": texts}).json()
    singles = [post(stack, {"text": text}).json() for text in texts]
    precision = requests.get(stack.url + "info", timeout=30).json()["model"]["precision"]
    assert [result["label"] for result in batch["results"]] == [single["label"] for single in singles]
    for result, single in zip(batch["results"], singles, strict=True):
        assert result["score"] == pytest.approx(single["score"], abs=SCORE_TOLERANCE[precision])


def test_both_facade_instances_answer_within_10_gets(stack):
    seen = {requests.get(stack.url, timeout=10).headers["X-Container-ID"] for _ in range(10)}
    assert len(seen) == 2


def test_a_request_id_is_echoed_and_one_is_made_when_missing(stack):
    echoed = post(stack, {"text": "fine"}, headers={"X-Request-ID": "trace-me-42"})
    assert echoed.headers["X-Request-ID"] == "trace-me-42"
    assert post(stack, {"text": "fine"}).headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"text": ', 400, "invalid_json"),
        (b'{"comment": "x"}', 400, "missing_text"),
        (b'{"text": "a", "texts": ["b"]}', 400, "conflicting_fields"),
        (b'{"texts": ["a", 3]}', 400, "invalid_text_type"),
        (b'{"text": "   "}', 400, "empty_text"),
        (b'{"texts": [' + b",".join([b'"a"'] * 65) + b"]}", 400, "too_many_texts"),
        (b'{"text": "' + b"a" * 10001 + b'"}', 400, "text_too_long"),
        (b'{"text": "' + b"a" * (1024 * 1024) + b'"}', 413, "payload_too_large"),
    ],
)
def test_bad_input_gets_its_json_error_through_nginx(stack, body, status, code):
    response = requests.post(stack.url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.headers["X-Container-ID"]


def test_other_content_types_get_415(stack):
    response = requests.post(stack.url, data="It is worth it", headers={"Content-Type": "text/plain"}, timeout=10)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_other_methods_get_405(stack):
    response = requests.put(stack.url, json={"text": "x"}, timeout=10)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/predictions/sentiment", "/models", "/metrics", "/ping", "/nope"])
def test_only_the_facade_routes_are_reachable(stack, path):
    response = requests.get(f"http://127.0.0.1:{stack.http_port}{path}", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_shows_the_container_id_and_the_form_posts_back_a_result(stack):
    page = requests.get(stack.url, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Container-ID"] in page.text
    result = requests.post(stack.url, data={"text": "It is worth it"}, timeout=30)
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/html")
    assert "POSITIVE" in result.text or "NEGATIVE" in result.text


def test_health_readiness_and_openapi_are_served(stack):
    assert requests.get(stack.url + "healthz", timeout=10).status_code == 200
    assert requests.get(stack.url + "readyz", timeout=10).status_code == 200
    spec = requests.get(stack.url + "openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.")
    assert "/" in spec["paths"]


def test_seed_sentences_get_the_right_labels(stack, serving_model_dir):
    if serving_model_dir != TEST_MODEL_DIR:
        pytest.skip(f"needs the trained stand-in model at {TEST_MODEL_DIR}")
    assert post(stack, {"text": "It is worth it"}).json()["label"] == "POSITIVE"
    assert post(stack, {"text": "It is a waste of time and money"}).json()["label"] == "NEGATIVE"


def test_test_app_client_prints_labels_and_container_ids(stack):
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "test_app.py"), "--url", stack.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all(line.split()[0] in {"POSITIVE", "NEGATIVE"} for line in lines)
    assert all(line.split()[2].endswith(tuple(str(port) for port in stack.facade_ports)) for line in lines)


def test_torchserve_stopped_gives_503_with_retry_after_then_recovers(stack):
    groups = running_groups(stack)
    assert stop_torchserve(groups["torchserve"])
    down_answer = post(stack, {"text": "fine"})
    assert down_answer.status_code == 503
    assert down_answer.headers["Retry-After"]
    assert down_answer.json()["error"]["code"] == "backend_unavailable"
    assert requests.get(stack.url + "readyz", timeout=10).status_code == 503

    record_restarted(stack, "torchserve", start_torchserve(stack.torchserve), STARTED)
    wait_until(
        lambda: http_status(stack.url + "readyz") == 200,
        timeout_s=30,
        what="readiness after restart",
        log_path=stack.log_dir,
    )
    assert post(stack, {"text": "fine"}).status_code == 200


def test_a_killed_facade_is_routed_around(stack):
    groups = running_groups(stack)
    victim_port = stack.facade_ports[0]
    pgid = groups[f"facade-{victim_port}"]
    os.killpg(pgid, 9)
    assert stop_group(pgid, timeout_s=5)
    answers = [post(stack, {"text": "fine"}) for _ in range(10)]
    assert [answer.status_code for answer in answers] == [200] * 10
    assert {answer.json()["container_id"] for answer in answers} == {answers[0].json()["container_id"]}

    # Bring it back so the stack is whole for `down`.
    record_restarted(stack, f"facade-{victim_port}", start_facade(stack, victim_port), STARTED)
    wait_until(
        lambda: http_status(f"http://127.0.0.1:{victim_port}/healthz") == 200,
        timeout_s=20,
        what="the revived facade",
        log_path=stack.log_dir,
    )


def test_make_up_then_make_down_leaves_no_process(tmp_path, tiny_model_dir):
    settings = private_stack(tmp_path)
    env = {
        **os.environ,
        "MODEL_DIR": str(tiny_model_dir),
        "MODEL_STORE": str(settings.torchserve.model_store),
        "HTTP_PORT": str(settings.http_port),
        "REPLICAS": "2",
        "FACADE_BASE_PORT": str(settings.facade_base_port),
        "TORCHSERVE_INFERENCE_PORT": str(settings.torchserve.inference_port),
        "TORCHSERVE_METRICS_PORT": str(settings.torchserve.metrics_port),
        "TORCHSERVE_GRPC_INFERENCE_PORT": str(settings.torchserve.grpc_inference_port),
        "TORCHSERVE_GRPC_MANAGEMENT_PORT": str(settings.torchserve.grpc_management_port),
        "RUN_DIR": str(settings.run_dir),
        "LOG_DIR": str(settings.log_dir),
    }

    def make(target):
        return run_make(target, env=env)

    started = make("up")
    assert started.returncode == 0, started.stdout + started.stderr
    assert settings.url in started.stdout
    groups = running_groups(settings)
    assert set(groups) == {"torchserve", "nginx", *(f"facade-{port}" for port in settings.facade_ports)}
    assert http_status(settings.url + "readyz") == 200

    assert make("down").returncode == 0
    assert all(group_members(pgid) == [] for pgid in groups.values())
    assert http_status(settings.url + "healthz") is None
    again = make("down")
    assert again.returncode == 0
    assert "nothing was running" in again.stdout
