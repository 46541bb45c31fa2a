"""POST / with JSON: the success shapes and every error a client can get back."""

import io
import json

import pytest

from facade.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError


def post_json(client, body, content_type="application/json", **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post("/", data=data, content_type=content_type, **kwargs)


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "container_id"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["container_id"] == "test-box"
    assert response.headers["X-Container-ID"] == "test-box"


def test_single_text_returns_label_score_and_container_id(client, predictor):
    response = post_json(client, {"text": "a good film"})

    assert response.status_code == 200
    assert response.get_json() == {"label": "POSITIVE", "score": 0.9998, "container_id": "test-box"}
    assert list(response.get_json()) == ["label", "score", "container_id"]
    assert predictor.calls[0][0] == ["a good film"]


def test_texts_return_results_in_input_order(client):
    response = post_json(client, {"texts": ["bad", "good", "meh"]})

    assert response.status_code == 200
    assert response.get_json() == {
        "results": [
            {"label": "NEGATIVE", "score": 0.75},
            {"label": "POSITIVE", "score": 0.9998},
            {"label": "NEGATIVE", "score": 0.75},
        ],
        "container_id": "test-box",
    }


def test_truncated_is_passed_through_only_where_torchserve_marked_it(client, predictor):
    predictor.truncated_indexes = {1}

    batch = post_json(client, {"texts": ["good", "long"]}).get_json()
    single = post_json(client, {"text": "good"}).get_json()

    assert [result.get("truncated") for result in batch["results"]] == [None, True]
    assert "truncated" not in single


def test_single_text_passes_truncated_through(client, predictor):
    predictor.truncated_indexes = {0}

    assert post_json(client, {"text": "long"}).get_json()["truncated"] is True


def test_unknown_fields_are_ignored(client):
    response = post_json(client, {"text": "good", "lang": "en", "extra": {"nested": [1, 2]}})

    assert response.status_code == 200
    assert response.get_json()["label"] == "POSITIVE"


@pytest.mark.parametrize(
    ("content_type",),
    [("application/json; charset=utf-8",), ("application/json;charset=UTF-8",), ("Application/JSON",)],
)
def test_json_content_type_with_charset_or_any_case_is_accepted(client, content_type):
    assert post_json(client, {"text": "good"}, content_type=content_type).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b'{"text": "caf\xe9"}', "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
        (b'["good"]', "invalid_json"),
        (b'"good"', "invalid_json"),
        (b"null", "invalid_json"),
        (b'{"text": "good", "x": NaN}', "invalid_json"),
        # Deep enough for Python's json to raise RecursionError, small enough for the body limit.
        (b"[" * 2000, "invalid_json"),
        (b'{"text": ' + b"[" * 2000, "invalid_json"),
        (b'{"text": "good", "text": "bad"}', "invalid_json"),
        (b'{"texts": ["good"], "x": {"a": 1, "a": 2}}', "invalid_json"),
        (b"{}", "missing_text"),
        (b'{"txt": "good"}', "missing_text"),
        (b'{"text": "good", "texts": ["good"]}', "conflicting_fields"),
        (b'{"text": 1}', "invalid_text_type"),
        (b'{"text": null}', "invalid_text_type"),
        (b'{"text": true}', "invalid_text_type"),
        (b'{"text": {"value": "good"}}', "invalid_text_type"),
        (b'{"text": ["good"]}', "invalid_text_type"),
        (b'{"texts": "good"}', "invalid_text_type"),
        (b'{"texts": null}', "invalid_text_type"),
        (b'{"texts": ["good", 2]}', "invalid_text_type"),
        (b'{"texts": ["good", null]}', "invalid_text_type"),
        (b'{"text": ""}', "empty_text"),
        (b'{"text": " \\n\\t\\u00a0\\u3000"}', "empty_text"),
        (b'{"texts": ["good", "  "]}', "empty_text"),
        (b'{"texts": []}', "empty_texts"),
        (b'{"texts": ["a", "b", "c", "d"]}', "too_many_texts"),
        (b'{"text": "' + b"x" * 21 + b'"}', "text_too_long"),
        (b'{"texts": ["good", "' + b"x" * 21 + b'"]}', "text_too_long"),
        (b'{"text": "\\ud800"}', "invalid_text"),
        (b'{"texts": ["good", "bad \\udfff end"]}', "invalid_text"),
    ],
)
def test_bad_json_body_is_rejected_400_without_calling_torchserve(client, predictor, body, code):
    response = post_json(client, body)

    assert_error(response, 400, code)
    assert predictor.calls == []


def test_text_at_the_character_limit_is_accepted(client):
    # Twenty characters, four of them outside the Basic Multilingual Plane: the limit counts characters.
    assert post_json(client, {"text": "good" + "x" * 12 + "😀" * 4}).status_code == 200


@pytest.mark.parametrize(("field", "detail"), [("text", '"text"'), ("texts", "texts[1]")])
def test_error_message_names_the_offending_field(client, field, detail):
    body = {"text": 5} if field == "text" else {"texts": ["good", 5]}

    assert detail in post_json(client, body).get_json()["error"]["message"]


def test_body_over_the_limit_is_rejected_413(client, predictor):
    response = post_json(client, {"text": "good", "padding": "x" * 3000})

    assert_error(response, 413, "payload_too_large")
    assert predictor.calls == []


def test_chunked_body_over_the_limit_is_rejected_413(client):
    # No Content-Length: Gunicorn marks such a stream as terminated by the server.
    body = io.BytesIO(b'{"text": "good", "padding": "' + b"x" * 3000 + b'"}')
    response = client.post(
        "/",
        input_stream=body,
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert_error(response, 413, "payload_too_large")


def test_chunked_body_under_the_limit_is_classified(client):
    response = client.post(
        "/",
        input_stream=io.BytesIO(b'{"text": "good"}'),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("content_type",),
    [
        ("text/plain",),
        ("",),
        ("multipart/form-data; boundary=x",),
        ("application/json; charset=latin-1",),
        ("application/jsonl",),
    ],
)
def test_body_that_is_not_json_or_the_form_is_rejected_415(client, content_type):
    response = client.post("/", data=b'{"text": "good"}', headers={"Content-Type": content_type})

    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UpstreamUnavailableError("TorchServe is not ready"), 503, "backend_unavailable"),
        (UpstreamTimeoutError("TorchServe is slow"), 504, "backend_timeout"),
        (UpstreamError("TorchServe said something odd"), 502, "backend_error"),
    ],
)
def test_torchserve_failures_map_to_gateway_errors(client, predictor, error, status, code):
    predictor.error = error

    assert_error(post_json(client, {"text": "good"}), status, code)


def test_unavailable_backend_tells_the_client_when_to_retry(client, predictor):
    predictor.error = UpstreamUnavailableError("TorchServe is not ready")

    assert post_json(client, {"text": "good"}).headers["Retry-After"] == "7"


def test_unexpected_exception_becomes_json_500_without_details(client, predictor):
    predictor.error = RuntimeError("secret internals")

    response = post_json(client, {"text": "good"})

    assert_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert response.headers["X-Request-ID"] in response.get_json()["error"]["message"]


def test_a_request_over_the_token_limit_gets_413_too_many_tokens_in_the_json_error_shape(client, predictor):
    from facade.errors import TooManyTokensError

    predictor.error = TooManyTokensError("The texts of this request come to 900 tokens, over the limit of 600.")
    response = client.post("/", json={"texts": ["good", "bad"]})

    assert response.status_code == 413
    assert response.get_json() == {
        "error": {"code": "too_many_tokens", "message": predictor.error.message},
        "container_id": "test-box",
    }
