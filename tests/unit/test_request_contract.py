"""The facade and the handler answer the same bad bodies with the same code and status.

The facade (facade/validation.py) is authoritative: it is the public API. The handler
(handler/sentiment_requests.py) sees a body after TorchServe has decoded it, and must not
answer a client who reaches it some other way (or a facade of another version) differently.
Only bodies both can judge are here: the text and character limits are the facade's alone,
and repeated keys or NaN are gone once TorchServe's json.loads has made a dict of the body.
"""

import json

import pytest

from facade.errors import ServiceError
from facade.settings import TRUNCATION_MODES, Settings
from facade.validation import classify_request

from sentiment_requests import InvalidRequestError, parse_request
from sentiment_truncation import DEFAULT_MODE, MODES

BAD_BODIES = [
    b"\xff\xfe not utf-8",
    b"{not json",
    b"[" * 2000,
    b'"good"',
    b"null",
    b"[1, 2]",
    b"{}",
    b'{"txt": "good"}',
    b'{"text": "good", "texts": ["good"]}',
    b'{"text": 1}',
    b'{"text": null}',
    b'{"text": true}',
    b'{"text": {"value": "good"}}',
    b'{"text": ["good"]}',
    b'{"texts": "good"}',
    b'{"texts": null}',
    b'{"texts": ["good", 2]}',
    b'{"texts": ["good", null]}',
    b'{"text": ""}',
    b'{"text": " \\n\\t\\u00a0\\u3000"}',
    b'{"texts": ["good", "  "]}',
    b'{"texts": []}',
    b'{"text": "\\ud800"}',
    b'{"texts": ["good", "bad \\udfff end"]}',
    b'{"text": "good", "all_scores": "true"}',
    b'{"text": "good", "all_scores": 1}',
    b'{"text": "good", "all_scores": null}',
    b'{"texts": ["good"], "truncation": "middle"}',
    b'{"texts": ["good"], "truncation": 1}',
    b'{"texts": ["good"], "truncation": ["left"]}',
    b'{"text": "", "truncation": "middle"}',
]


def facade_answer(body):
    """Return (status, code) of the facade's validation for a JSON body."""
    try:
        classify_request(body, Settings())
    except ServiceError as exc:
        return exc.status, exc.code
    return 200, None


def torchserve_decoded(body):
    """Return the body as TorchServe 0.12 hands an application/json request to the handler.

    Its worker runs json.loads on the bytes and, when that fails, passes the bytes on unchanged
    (ts/protocol/otf_message_handler.py).
    """
    try:
        return json.loads(body.decode("utf-8"))
    except Exception:
        return body


def handler_answer(body):
    """Return (status, code) of the handler's parsing for one request row."""
    try:
        parse_request({"body": body})
    except InvalidRequestError as exc:
        return exc.status, exc.code
    return 200, None


@pytest.mark.parametrize("body", BAD_BODIES, ids=lambda body: body[:40].decode("utf-8", "replace"))
def test_the_handler_answers_a_bad_body_as_the_facade_does(body):
    expected = facade_answer(body)
    assert expected[0] == 400
    assert handler_answer(torchserve_decoded(body)) == expected
    # A body TorchServe could not decode, or one sent as text/bytes, reaches the handler raw.
    assert handler_answer(body) == expected


def test_both_know_the_same_truncation_modes_and_default():
    assert TRUNCATION_MODES == MODES
    assert Settings().default_truncation == DEFAULT_MODE


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "good"}',
        b'{"texts": ["good", "bad"]}',
        b'{"text": "good", "all_scores": true, "truncation": "window"}',
        b'{"texts": ["good"], "all_scores": false, "truncation": "head_tail"}',
    ],
)
def test_both_accept_a_good_body(body):
    assert facade_answer(body) == handler_answer(torchserve_decoded(body)) == (200, None)
