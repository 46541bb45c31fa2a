"""GET /info, the archive version on every answer and in the metrics, and the classify options."""

import pytest

from facade.errors import UpstreamUnavailableError
from facade.info import MAX_VERSION_LABELS, OTHER, ModelInfo, VersionLabels, precision_choice

# What tools/precision_gate.py records for PRECISION=auto (the MiniLM test model's build).
CHOICE = {
    "requested": "auto",
    "precision": "int8",
    "reason": "int8 with layer 1 in fp32: 9 of 1200 labels flip (0.75 %)",
    "sample": "tools/agreement/sentences.txt",
    "sentences": 1200,
    "flip_rate": 0.0075,
    "max_score_change": 0.162,
    "max_flip_rate": 0.01,
    "fp32_layers": [1],
}


def test_info_names_the_model_and_every_limit(client, predictor):
    predictor.description = {
        "archive_version": "0123456789ab",
        "model_id": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "revision": "714eb0f",
        "runtime": "onnx",
        "precision": "int8",
        "labels": ["NEGATIVE", "POSITIVE"],
        "precision_choice": CHOICE,
        "max_text_tokens": 512,
        "max_request_tokens": 2048,
        "max_windows": 8,
    }
    response = client.get("/info")

    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "0123456789ab"
    body = response.get_json()
    assert body["model"] == {
        "name": "sentiment",
        "id": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "revision": "714eb0f",
        "archive_version": "0123456789ab",
        "runtime": "onnx",
        "precision": "int8",
        "labels": ["NEGATIVE", "POSITIVE"],
        "precision_choice": CHOICE,
    }
    assert body["limits"] == {
        "max_texts": 3,
        "max_text_chars": 20,
        "max_body_bytes": 2048,
        "max_text_tokens": 512,
        "max_request_tokens": 2048,
        "max_windows": 8,
        "timeout_s": 15.0,
    }
    assert body["truncation"] == {"default": "right", "modes": ["right", "left", "head_tail", "error", "window"]}
    assert body["container_id"] == "test-box"


def test_info_says_null_when_the_archive_was_built_with_a_fixed_precision():
    assert precision_choice(None) is None
    assert precision_choice("int8") is None


def test_info_keeps_only_the_known_figures_of_the_precision_choice():
    shown = precision_choice({**CHOICE, "flip_rate": {"nested": 1}, "model_dir": "/home/someone/model"})
    assert "flip_rate" not in shown and "model_dir" not in shown
    assert shown["reason"] == CHOICE["reason"] and shown["fp32_layers"] == [1]


def test_info_without_torchserve_is_503_with_retry_after(client, predictor):
    predictor.error = UpstreamUnavailableError("down")
    response = client.get("/info")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "backend_unavailable"
    assert response.headers["Retry-After"] == "7"


def test_info_is_asked_of_torchserve_once_per_ttl():
    calls = []

    class Describing:
        def describe(self):
            calls.append(1)
            return {"archive_version": f"v{len(calls)}"}

    now = [0.0]
    info = ModelInfo(30.0, clock=lambda: now[0])
    assert info.current(Describing())["archive_version"] == "v1"
    now[0] = 29.0
    assert info.current(Describing())["archive_version"] == "v1"
    now[0] = 31.0
    assert info.current(Describing())["archive_version"] == "v2"


def test_a_classification_carries_the_version_that_produced_it_and_is_counted_by_it(client):
    response = client.post("/", json={"text": "good"})
    assert response.headers["X-Model-Version"] == "0123456789ab"
    assert set(response.get_json()) == {"label", "score", "container_id"}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'facade_model_answers_total{model_version="0123456789ab"} 1.0' in metrics


def test_an_error_not_produced_by_the_model_carries_no_version(client):
    response = client.post("/", json={"text": ""})
    assert response.status_code == 400
    assert "X-Model-Version" not in response.headers


def test_version_labels_are_bounded():
    labels = VersionLabels()
    seen = [labels.label(f"v{index}") for index in range(MAX_VERSION_LABELS + 3)]
    assert seen[:MAX_VERSION_LABELS] == [f"v{index}" for index in range(MAX_VERSION_LABELS)]
    assert seen[MAX_VERSION_LABELS:] == [OTHER] * 3
    assert labels.label("v0") == "v0"


def test_options_are_passed_on_with_the_server_default(client, predictor):
    client.post("/", json={"text": "good"})
    client.post("/", json={"texts": ["good"], "all_scores": True, "truncation": "window"})
    assert predictor.options == [
        {"all_scores": False, "truncation": "right"},
        {"all_scores": True, "truncation": "window"},
    ]


def test_the_server_default_truncation_comes_from_the_settings(settings, predictor):
    from dataclasses import replace

    from facade import create_app

    client = create_app(replace(settings, default_truncation="head_tail"), predictor).test_client()
    client.post("/", json={"text": "good"})
    client.post("/", data={"text": "good"})
    assert [options["truncation"] for options in predictor.options] == ["head_tail", "head_tail"]


@pytest.mark.parametrize(
    "body",
    [
        {"text": "good", "all_scores": "true"},
        {"text": "good", "all_scores": None},
        {"texts": ["good"], "truncation": "middle"},
        {"texts": ["good"], "truncation": 3},
    ],
)
def test_a_bad_option_is_a_400_naming_it(client, predictor, body):
    response = client.post("/", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_option"
    assert next(name for name in ("all_scores", "truncation") if name in body) in error["message"]
    assert predictor.calls == []
