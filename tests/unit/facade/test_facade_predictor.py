"""TorchServeClient against a stand-in TorchServe on a loopback port."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facade.admission import gunicorn_threads
from facade.errors import (
    SaturatedError,
    TextTooManyTokensError,
    TooManyTokensError,
    UpstreamError,
    UpstreamSaturatedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from facade.predictor import TorchServeClient
from facade.settings import Settings
from stack.private import free_port

NO_WORKER = {
    "code": 503,
    "type": "ServiceUnavailableException",
    "message": 'Model "sentiment" has no worker to serve inference request. Please use scale workers API.',
}
# TorchServe's answer for the batch of a worker process that died mid-inference (507: SIGKILLed).
WORKER_DIED = {"code": 507, "type": "InternalServerException", "message": "Worker died."}
HANDLER_FAILED = {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}
OK = {"results": [{"label": "POSITIVE", "score": 0.9}]}
# The archive version the stub stamps on every answer, as the handler does.
STUB_VERSION = "a1b2c3d4e5f6"


# A describe job is a POST to the same path as a classification: the stub scripts it apart.
DESCRIBE = "#describe"
DESCRIPTION = {"model_id": "distilbert", "revision": "714eb0f", "labels": ["NEGATIVE", "POSITIVE"]}


class StubTorchServe:
    """Answers each (method, path) as scripted and records every request it receives.

    A describe job (X-Sentiment-Describe) is scripted and recorded as path + DESCRIBE.
    """

    def __init__(self):
        self.answers = {}
        self.received = []

    def answer(self, method, path, status=200, body=None, delay_s=0.0, hang_up=False):
        """Script the reply to method and path: a status and JSON (or raw bytes) body."""
        self.answers[(method, path)] = (status, body, delay_s, hang_up)

    def answer_in_turn(self, method, path, *replies):
        """Script successive replies, each (status, body[, delay_s]); the last one repeats."""
        self.answers[(method, path)] = [(*(*reply, 0.0)[:3], False) for reply in replies]

    def handler(self):
        """Return the request handler class bound to this stub."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.reply()

            def do_POST(self):
                self.reply()

            def reply(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                marker = DESCRIBE if self.headers.get("X-Sentiment-Describe") else ""
                stub.received.append((self.command, self.path + marker, dict(self.headers), body))
                # A version named in the path (/predictions/<model>/<version>) is the one it stamps.
                path = self.path.removesuffix(f"/{STUB_VERSION}") + marker
                scripted = stub.answers.get(
                    (self.command, path), (404, {"code": 404, "type": "ModelNotFoundException"}, 0, False)
                )
                if isinstance(scripted, list):
                    scripted = scripted.pop(0) if len(scripted) > 1 else scripted[0]
                status, payload, delay_s, hang_up = scripted
                time.sleep(delay_s)
                if hang_up:
                    self.close_connection = True
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Model-Version", STUB_VERSION)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler


def served_stub():
    """Yield a StubTorchServe listening on a free loopback port; shut it down after."""
    stub = StubTorchServe()
    server = ThreadingHTTPServer(("127.0.0.1", 0), stub.handler())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    stub.url = f"http://127.0.0.1:{server.server_port}"
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stub_server():
    yield from served_stub()


@pytest.fixture
def torchserve(stub_server):
    stub_server.answers.clear()
    stub_server.received.clear()
    return stub_server


@pytest.fixture
def retrying_client(torchserve):
    """A client whose read timeout leaves room for its one retry after a lost worker."""
    client = TorchServeClient(Settings(torchserve_url=torchserve.url, read_timeout_s=2.0))
    yield client
    client.close()


@pytest.fixture
def ts_client(torchserve):
    settings = Settings(
        torchserve_url=torchserve.url + "/",
        read_timeout_s=0.3,
        ready_timeout_s=0.3,
    )
    client = TorchServeClient(settings)
    yield client
    client.close()


def test_classify_posts_texts_and_request_id_and_returns_results_in_order(torchserve, ts_client):
    results = [{"label": "POSITIVE", "score": 0.99}, {"label": "NEGATIVE", "score": 1, "truncated": True}]
    torchserve.answer("POST", "/predictions/sentiment", body={"results": results})

    answer = ts_client.classify(["good", "bad"], "rid-1")

    assert answer == [{"label": "POSITIVE", "score": 0.99}, {"label": "NEGATIVE", "score": 1.0, "truncated": True}]
    method, path, headers, body = torchserve.received[0]
    assert (method, path) == ("POST", "/predictions/sentiment")
    assert headers["X-Request-ID"] == "rid-1"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"texts": ["good", "bad"]}


def test_classify_keeps_only_the_public_fields(torchserve, ts_client):
    result = {"label": "POSITIVE", "score": 0.5, "truncated": False, "logits": [1, 2], "tokens": 7}
    torchserve.answer("POST", "/predictions/sentiment", body={"results": [result]})

    assert ts_client.classify(["good"], "rid") == [{"label": "POSITIVE", "score": 0.5}]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, NO_WORKER),
        (503, b"Service Unavailable"),
        (404, {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: sentiment"}),
    ],
)
def test_no_worker_full_queue_or_unregistered_model_is_unavailable(torchserve, ts_client, status, body):
    torchserve.answer("POST", "/predictions/sentiment", status=status, body=body)

    with pytest.raises(UpstreamUnavailableError):
        ts_client.classify(["good"], "rid")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}),
        (400, {"error": {"code": "empty_text", "message": "texts[0] is empty"}}),
        (404, {"error": {"code": "not_found", "message": "handler said so"}}),
        (413, {"code": 413, "type": "RequestEntityTooLarge"}),
        (500, {"code": 500, "type": "InternalServerException", "message": "Something else."}),
        (507, {"code": 507, "type": "InternalServerException", "message": "Out of resources"}),
        (302, {}),
        (200, b"not json"),
        (200, {"results": "POSITIVE"}),
        (200, {"results": []}),
        (200, {"results": [{"label": "POSITIVE", "score": 0.9}] * 2}),
        (200, {"results": [{"label": "POSITIVE"}]}),
        (200, {"results": [{"label": "", "score": 0.9}]}),
        (200, {"results": [{"label": "POSITIVE", "score": 1.5}]}),
        (200, {"results": [{"label": "POSITIVE", "score": True}]}),
        (200, {"results": [{"label": "POSITIVE", "score": "0.9"}]}),
        (200, {"results": [{"label": "POSITIVE", "score": 0.9, "truncated": "yes"}]}),
        (200, {"results": ["POSITIVE"]}),
        (200, [{"label": "POSITIVE", "score": 0.9}]),
    ],
)
def test_unexpected_answer_is_a_backend_error(torchserve, ts_client, status, body):
    torchserve.answer("POST", "/predictions/sentiment", status=status, body=body)

    with pytest.raises(UpstreamError) as caught:
        ts_client.classify(["good"], "rid-7")

    assert type(caught.value) is UpstreamError
    assert "rid-7" in caught.value.message


@pytest.mark.parametrize("status", [500, 507])
def test_a_request_whose_worker_died_is_retried_once_and_succeeds(torchserve, retrying_client, status):
    torchserve.answer_in_turn("POST", "/predictions/sentiment", (status, {**WORKER_DIED, "code": status}), (200, OK))

    assert retrying_client.classify(["good"], "rid") == [{"label": "POSITIVE", "score": 0.9}]
    assert len(torchserve.received) == 2
    assert torchserve.received[0][3] == torchserve.received[1][3]


def test_a_request_whose_worker_dies_twice_is_unavailable_after_one_retry(torchserve, retrying_client):
    torchserve.answer("POST", "/predictions/sentiment", status=507, body=WORKER_DIED)

    with pytest.raises(UpstreamUnavailableError):
        retrying_client.classify(["good"], "rid")

    assert len(torchserve.received) == 2


def test_a_worker_scaled_down_mid_request_is_retried(torchserve, retrying_client):
    scaled_down = {"code": 500, "type": "InternalServerException", "message": "Worker scaled down."}
    torchserve.answer_in_turn("POST", "/predictions/sentiment", (500, scaled_down), (200, OK))

    assert retrying_client.classify(["good"], "rid") == [{"label": "POSITIVE", "score": 0.9}]


def test_a_handler_that_raised_is_a_backend_error_and_not_retried(torchserve, retrying_client):
    torchserve.answer("POST", "/predictions/sentiment", status=503, body=HANDLER_FAILED)

    with pytest.raises(UpstreamError) as caught:
        retrying_client.classify(["good"], "rid")

    assert type(caught.value) is UpstreamError
    assert len(torchserve.received) == 1


def test_no_retry_when_the_read_timeout_is_nearly_spent(torchserve):
    client = TorchServeClient(Settings(torchserve_url=torchserve.url, read_timeout_s=0.7))
    torchserve.answer_in_turn("POST", "/predictions/sentiment", (507, WORKER_DIED, 0.4), (200, OK))

    with pytest.raises(UpstreamUnavailableError):
        client.classify(["good"], "rid")
    client.close()

    assert len(torchserve.received) == 1


def test_the_retry_gets_only_what_is_left_of_the_read_timeout(torchserve):
    client = TorchServeClient(Settings(torchserve_url=torchserve.url, read_timeout_s=1.2))
    torchserve.answer_in_turn("POST", "/predictions/sentiment", (507, WORKER_DIED, 0.5), (200, OK, 1.0))
    started = time.monotonic()

    with pytest.raises(UpstreamTimeoutError):
        client.classify(["good"], "rid")
    client.close()

    assert time.monotonic() - started < 1.2 + 0.3


def test_nan_score_is_a_backend_error(torchserve, ts_client):
    torchserve.answer("POST", "/predictions/sentiment", body=b'{"results": [{"label": "POSITIVE", "score": NaN}]}')

    with pytest.raises(UpstreamError):
        ts_client.classify(["good"], "rid")


def test_slow_torchserve_is_a_timeout(torchserve, ts_client):
    torchserve.answer("POST", "/predictions/sentiment", body={"results": []}, delay_s=0.8)

    with pytest.raises(UpstreamTimeoutError):
        ts_client.classify(["good"], "rid")


def test_a_proxy_in_the_environment_never_carries_requests_to_torchserve(torchserve, ts_client, monkeypatch):
    # TorchServe is a private backend: a proxy set for the container's other traffic must not see it.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    torchserve.answer("POST", "/predictions/sentiment", body=OK)

    assert ts_client.classify(["good"], "rid") == [{"label": "POSITIVE", "score": 0.9}]


def test_refused_connection_is_unavailable():
    client = TorchServeClient(Settings(torchserve_url=f"http://127.0.0.1:{free_port()}"))

    with pytest.raises(UpstreamUnavailableError):
        client.classify(["good"], "rid")
    client.close()


def test_connection_dropped_after_sending_is_unavailable_and_not_retried(torchserve, ts_client):
    torchserve.answer("POST", "/predictions/sentiment", hang_up=True)

    with pytest.raises(UpstreamUnavailableError):
        ts_client.classify(["good"], "rid")

    assert len(torchserve.received) == 1


def answer_ready(stub):
    """Script a replica whose frontend is up and whose worker answers describe jobs."""
    stub.answer("GET", "/ping", body={"status": "Healthy"})
    stub.answer("POST", "/predictions/sentiment" + DESCRIBE, body=DESCRIPTION)


def asked(stub, path):
    return [received for received in stub.received if received[1] == path]


def test_ready_once_the_replica_answers_ping_and_a_describe_job(torchserve, ts_client):
    answer_ready(torchserve)

    assert ts_client.is_ready() is True
    assert len(asked(torchserve, "/predictions/sentiment" + DESCRIBE)) == 1


def test_a_proven_replica_is_judged_by_ping_alone_so_probes_do_not_queue_behind_jobs(torchserve, ts_client):
    answer_ready(torchserve)
    assert ts_client.is_ready() is True
    # Under load a describe job would wait in the worker's queue: later probes no longer send one.
    torchserve.answer("POST", "/predictions/sentiment" + DESCRIBE, body=DESCRIPTION, delay_s=0.8)

    assert [ts_client.is_ready() for _ in range(3)] == [True] * 3
    assert len(asked(torchserve, "/predictions/sentiment" + DESCRIBE)) == 1
    assert len(asked(torchserve, "/ping")) == 4


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # TorchServe before the model is registered, with no worker, or with a worker still loading.
        (404, {"code": 404, "type": "ModelNotFoundException"}),
        (503, NO_WORKER),
        # A handler that does not know describe jobs classifies nothing and says so.
        (400, {"error": {"code": "missing_text", "message": "Send text"}}),
        (200, {"results": []}),
        (200, b"READY"),
    ],
)
def test_not_ready_while_no_worker_answers_a_describe_job(torchserve, ts_client, status, body):
    torchserve.answer("GET", "/ping", body={"status": "Healthy"})
    torchserve.answer("POST", "/predictions/sentiment" + DESCRIBE, status=status, body=body)

    assert ts_client.is_ready() is False


def test_not_ready_when_ping_says_unhealthy_even_if_the_replica_was_proven(torchserve, ts_client):
    answer_ready(torchserve)
    assert ts_client.is_ready() is True
    torchserve.answer("GET", "/ping", status=500, body={"status": "Unhealthy"})

    assert ts_client.is_ready() is False


def test_a_replica_that_failed_must_answer_a_describe_job_again_before_it_counts(torchserve, ts_client):
    answer_ready(torchserve)
    assert ts_client.is_ready() is True
    torchserve.answer("POST", "/predictions/sentiment", hang_up=True)  # a job's connection cut: failed
    with pytest.raises(UpstreamUnavailableError):
        ts_client.classify(["good"], "rid")
    torchserve.answer("POST", "/predictions/sentiment" + DESCRIBE, status=503, body=NO_WORKER)

    assert ts_client.is_ready() is False
    assert len(asked(torchserve, "/predictions/sentiment" + DESCRIBE)) == 2


def test_not_ready_when_the_describe_job_is_slower_than_the_ready_timeout(torchserve, ts_client):
    torchserve.answer("GET", "/ping", body={"status": "Healthy"})
    torchserve.answer("POST", "/predictions/sentiment" + DESCRIBE, body=DESCRIPTION, delay_s=0.8)

    assert ts_client.is_ready() is False


def test_not_ready_when_torchserve_refuses_connections():
    client = TorchServeClient(Settings(torchserve_url=f"http://127.0.0.1:{free_port()}"))

    assert client.is_ready() is False
    client.close()


def test_readiness_never_asks_the_management_api(torchserve, ts_client):
    answer_ready(torchserve)
    ts_client.is_ready()
    ts_client.describe()

    assert {path for _, path, _, _ in torchserve.received} <= {"/ping", "/predictions/sentiment" + DESCRIBE}


def test_each_post_tells_torchserve_when_the_facade_stops_waiting(torchserve, retrying_client):
    torchserve.answer("POST", "/predictions/sentiment", body=OK)
    before = time.time()

    retrying_client.classify(["good"], "rid-deadline")

    deadline = float(torchserve.received[0][2]["X-Request-Deadline"])
    # Read timeout 2 s, less the margin that lets a refusal at the deadline still reach the facade.
    assert before + 1.0 < deadline < time.time() + 2.0


TOO_MANY = {
    "error": {
        "code": "too_many_tokens",
        "message": "The texts of this request come to 900 tokens, over the limit of 600 tokens per request "
        "(each text counts at most 512); split them into at least 2 requests.",
        "tokens": 900,
        "max_request_tokens": 600,
        "max_text_tokens": 512,
    }
}


def test_the_handlers_413_teaches_its_limits_and_the_job_is_cut_to_them(torchserve, ts_client):
    one = {"results": [{"label": "POSITIVE", "score": 0.9}], "tokens": 452}
    torchserve.answer_in_turn("POST", "/predictions/sentiment", (413, TOO_MANY), (200, one))
    assert ts_client.classify(["word " * 450, "word " * 450], "rid-1") == one["results"] * 2
    sent = [json.loads(body)["texts"] for _, _, _, body in torchserve.received]
    assert [len(texts) for texts in sent] == [2, 1, 1]
    assert ts_client.token_limits.current() == (600, 512)


def test_a_job_the_handler_still_refuses_after_the_cut_is_413_with_its_message(torchserve, ts_client):
    torchserve.answer("POST", "/predictions/sentiment", status=413, body=TOO_MANY)
    with pytest.raises(TooManyTokensError) as refused:
        ts_client.classify(["word " * 450, "word " * 450], "rid-1")
    assert refused.value.message == TOO_MANY["error"]["message"]


def test_a_request_surely_over_the_limit_per_request_is_refused_before_any_job_runs(torchserve, ts_client):
    # 64 texts of at least 502 tokens each: over 8,192 whatever the tokenizer makes of them.
    with pytest.raises(TooManyTokensError) as refused:
        ts_client.classify(["word " * 500] * 64, "rid-2")
    assert "at least 32128 tokens" in refused.value.message
    assert "limit of 8192 tokens" in refused.value.message and "at least 4 requests" in refused.value.message
    assert torchserve.received == []


def test_a_request_is_stopped_once_its_counted_tokens_go_over_the_limit(torchserve, ts_client):
    # The handler counts far more than the lower bound saw (say, a script the bound cannot read).
    # 16 texts of 252 tokens at most (and at least): 4 per job of 1,024.
    counted = {"results": [{"label": "POSITIVE", "score": 0.9}] * 4, "tokens": 8000}
    torchserve.answer("POST", "/predictions/sentiment", body=counted)
    with pytest.raises(TooManyTokensError, match="over the limit of 8192"):
        ts_client.classify(["w " * 250] * 16, "rid-3")
    assert len(torchserve.received) == 1


def test_a_large_request_goes_as_jobs_of_at_most_1024_tokens_one_at_a_time_in_order(torchserve, ts_client):
    def answer(count):
        return {"results": [{"label": "POSITIVE", "score": count / 100}] * count, "tokens": 100 * count}

    # 64 texts of at most 66 tokens (64 characters that are not spaces, plus 2): 15 fit in a job of 1,024.
    jobs = (15, 15, 15, 15, 4)
    torchserve.answer_in_turn("POST", "/predictions/sentiment", *[(200, answer(count)) for count in jobs])
    results = ts_client.classify(["a b c " * 21 + "x"] * 64, "rid-4")
    assert [len(json.loads(body)["texts"]) for _, _, _, body in torchserve.received] == list(jobs)
    assert [result["score"] for result in results] == [0.15] * 60 + [0.04] * 4


def test_the_jobs_after_the_first_go_to_the_version_that_answered_it(torchserve, ts_client):
    # A model upgrade may switch TorchServe's default version between two jobs of one request.
    answer = {"results": [{"label": "POSITIVE", "score": 0.9}] * 15, "tokens": 1000}
    torchserve.answer("POST", "/predictions/sentiment", body=answer)
    ts_client.classify(["a b c " * 21 + "x"] * 30, "rid-pinned")
    paths = [path for _, path, _, _ in torchserve.received]
    assert paths == ["/predictions/sentiment", f"/predictions/sentiment/{STUB_VERSION}"]


def test_a_busy_job_is_sent_again_at_once_counting_its_deferrals(torchserve, retrying_client):
    busy = {"error": {"code": "busy", "message": "The batch's token budget went to older requests."}}
    torchserve.answer_in_turn("POST", "/predictions/sentiment", (503, busy), (503, busy), (200, OK))
    assert retrying_client.classify(["good"], "rid-busy") == OK["results"]
    assert [headers["X-Job-Deferrals"] for _, _, headers, _ in torchserve.received] == ["0", "1", "2"]


def test_a_job_still_busy_at_the_deadline_is_503_over_deadline_not_a_timeout(torchserve, retrying_client):
    busy = {"error": {"code": "busy", "message": "The batch's token budget went to older requests."}}
    torchserve.answer("POST", "/predictions/sentiment", status=503, body=busy, delay_s=0.05)
    with pytest.raises(UpstreamSaturatedError, match="saturated") as stopped:
        retrying_client.classify(["good"], "rid-busy")
    assert stopped.value.status == 503 and stopped.value.retry_after_s >= 1
    assert len(torchserve.received) > 1  # resent while there was time


def test_a_request_that_cannot_end_in_time_stops_and_halves_the_heavy_requests_run_at_once(torchserve, ts_client):
    # Read timeout 0.3 s; jobs of 0.1 s each: after two, the other two would end past the deadline.
    answer = {"results": [{"label": "POSITIVE", "score": 0.9}] * 4, "tokens": 1008}
    torchserve.answer("POST", "/predictions/sentiment", body=answer, delay_s=0.1)
    limit = ts_client.heavy.limit
    with pytest.raises(UpstreamSaturatedError) as stopped:
        ts_client.classify(["w " * 250] * 32, "rid-heavy")
    assert len(torchserve.received) < 4
    assert stopped.value.status == 503 and stopped.value.retry_after_s >= 1
    assert ts_client.heavy.limit == limit / 2 and ts_client.heavy.in_flight == 0


def test_a_heavy_request_over_the_limit_gets_429_at_once_and_a_light_one_is_still_served(torchserve, ts_client):
    ts_client.heavy.limit = 1.0
    assert ts_client.heavy.try_start()  # one heavy request in progress
    with pytest.raises(SaturatedError) as turned_away:
        ts_client.classify(["w " * 250] * 16, "rid-next")
    assert turned_away.value.status == 429 and turned_away.value.retry_after_s >= 1
    assert torchserve.received == []  # nothing of it was sent
    torchserve.answer("POST", "/predictions/sentiment", body=OK)
    assert ts_client.classify(["good"], "rid-light") == OK["results"]


def test_a_request_whose_deadline_passed_in_the_queue_is_unavailable_with_the_handlers_message(torchserve, ts_client):
    body = {"error": {"code": "deadline_exceeded", "message": "The request waited in the queue too long."}}
    torchserve.answer("POST", "/predictions/sentiment", status=503, body=body)
    with pytest.raises(UpstreamUnavailableError, match="waited in the queue"):
        ts_client.classify(["good"], "rid-late")


def test_text_is_forwarded_as_utf_8_without_escapes(torchserve, ts_client):
    torchserve.answer("POST", "/predictions/sentiment", body=OK)
    text = "\U0001f389" * 1000
    ts_client.classify([text], "rid-emoji")
    body = torchserve.received[0][3]
    assert len(body) < len(text.encode("utf-8")) + 100  # not 12 bytes of "\\ud83c\\udf89" per emoji
    assert json.loads(body) == {"texts": [text]}


def test_other_handler_errors_stay_backend_errors(torchserve, ts_client):
    body = {"error": {"code": "too_many_tokens", "message": "wrong status"}}
    torchserve.answer("POST", "/predictions/sentiment", status=503, body=body)
    with pytest.raises(UpstreamError):
        ts_client.classify(["good"], "rid-odd")


def test_options_reach_the_handler_and_its_extra_fields_come_back(torchserve, ts_client):
    scores = [{"label": "POSITIVE", "score": 0.75}, {"label": "NEGATIVE", "score": 0.25}]
    torchserve.answer(
        "POST", "/predictions/sentiment", body={"results": [{"label": "POSITIVE", "score": 0.75, "scores": scores,
                                                             "windows": 3}]}
    )  # fmt: skip

    answer = ts_client.classify(["good"], "rid-o", {"all_scores": True, "truncation": "window"})

    assert answer == [{"label": "POSITIVE", "score": 0.75, "scores": scores, "windows": 3}]
    assert json.loads(torchserve.received[-1][3]) == {"texts": ["good"], "all_scores": True, "truncation": "window"}


def test_the_archive_version_of_the_answer_is_noted_for_the_request(torchserve, ts_client):
    from facade.info import forget_served_version, served_version

    forget_served_version()
    torchserve.answer("POST", "/predictions/sentiment", body=OK)
    ts_client.classify(["good"], "rid-v")
    assert served_version() == STUB_VERSION


@pytest.mark.parametrize(
    "extras",
    [
        {"scores": "all"},
        {"scores": [{"label": "POSITIVE", "score": 2}]},
        {"windows": 0},
        {"windows": True},
        {"logits": [1.0, 2.0]},
        {"logits": {"POSITIVE": "high"}},
    ],
)
def test_malformed_extra_fields_are_a_backend_error(torchserve, ts_client, extras):
    torchserve.answer(
        "POST", "/predictions/sentiment", body={"results": [{"label": "POSITIVE", "score": 0.9, **extras}]}
    )
    with pytest.raises(UpstreamError):
        ts_client.classify(["good"], "rid-x", {"all_scores": True, "raw_scores": True, "truncation": "window"})


def test_extra_fields_not_asked_for_stay_private(torchserve, ts_client):
    extras = {"scores": [{"label": "POSITIVE", "score": 0.9}], "windows": 2, "logits": {"POSITIVE": 3.0}}
    torchserve.answer(
        "POST", "/predictions/sentiment", body={"results": [{"label": "POSITIVE", "score": 0.9, **extras}]}
    )
    assert ts_client.classify(["good"], "rid-p", {"all_scores": False, "truncation": "right"}) == [
        {"label": "POSITIVE", "score": 0.9}
    ]


def test_a_text_over_the_token_limit_under_error_truncation_is_413_with_the_count(torchserve, ts_client):
    message = "Text 0 has 700 tokens, over the model's limit of 512 tokens per text"
    error = {"code": "text_too_many_tokens", "message": message, "index": 0, "tokens": 700, "max_text_tokens": 512}
    torchserve.answer("POST", "/predictions/sentiment", status=413, body={"error": error})
    with pytest.raises(TextTooManyTokensError) as raised:
        ts_client.classify(["long"], "rid-e", {"truncation": "error", "all_scores": False})
    assert raised.value.status == 413 and "700 tokens" in raised.value.message


def test_describe_returns_the_handlers_own_description_with_the_archive_version_that_answered(torchserve, ts_client):
    torchserve.answer("POST", "/predictions/sentiment" + DESCRIBE, body={**DESCRIPTION, "archive_version": "old"})

    assert ts_client.describe() == {**DESCRIPTION, "archive_version": STUB_VERSION}
    (_, _, headers, body), *_ = torchserve.received
    assert headers["X-Sentiment-Describe"] == "1" and json.loads(body) == {}


def test_describe_without_torchserve_is_503(torchserve, ts_client):
    with pytest.raises(UpstreamUnavailableError):
        ts_client.describe()


def test_one_classifies_per_thread_three_wait_and_beyond_that_429_keeps_threads_free_for_probes(torchserve):
    # FACADE_THREADS 1: one classifies, three wait for it, a fifth is turned away at once.
    client = TorchServeClient(Settings(torchserve_url=torchserve.url, read_timeout_s=3.0, threads=1))
    torchserve.answer("POST", "/predictions/sentiment", body=OK, delay_s=0.3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        taken = [pool.submit(client.classify, ["good"], f"rid-{index}") for index in range(4)]
        time.sleep(0.15)
        with pytest.raises(SaturatedError) as full:
            client.classify(["good"], "rid-5")
        assert [future.result() for future in taken] == [OK["results"]] * 4
    assert full.value.status == 429 and full.value.retry_after_s >= 1
    assert client.classify(["good"], "rid-6") == OK["results"]  # room again
    client.close()


def test_gunicorn_gets_threads_to_classify_to_wait_and_two_for_probes():
    assert gunicorn_threads(16) == 4 * 16 + 2


def test_a_too_long_text_found_in_a_later_job_is_numbered_as_in_the_clients_request():
    message = "Text 2 has 700 tokens, over the model's limit of 512 tokens per text"
    error = TextTooManyTokensError(message, 2).at_offset(40)
    assert error.index == 42
    assert error.message == "Text 42 has 700 tokens, over the model's limit of 512 tokens per text"
    assert TextTooManyTokensError(message, 2).at_offset(0).message == message


@pytest.fixture(scope="module")
def second_stub_server():
    yield from served_stub()


@pytest.fixture
def other_torchserve(second_stub_server):
    second_stub_server.answers.clear()
    second_stub_server.received.clear()
    return second_stub_server


def replica_client(*urls, read_timeout_s=2.0):
    return TorchServeClient(Settings(torchserve_url=",".join(urls), read_timeout_s=read_timeout_s))


def test_requests_are_spread_over_every_replica(torchserve, other_torchserve):
    for stub in (torchserve, other_torchserve):
        stub.answer("POST", "/predictions/sentiment", body=OK)
    client = replica_client(torchserve.url, other_torchserve.url)

    for _ in range(4):
        client.classify(["good"], "rid")
    client.close()

    assert (len(torchserve.received), len(other_torchserve.received)) == (2, 2)


def test_a_request_a_replica_refuses_is_served_by_the_other(other_torchserve):
    other_torchserve.answer("POST", "/predictions/sentiment", body=OK)
    client = replica_client(f"http://127.0.0.1:{free_port()}", other_torchserve.url)

    assert [client.classify(["good"], f"rid-{n}") for n in range(3)] == [[{"label": "POSITIVE", "score": 0.9}]] * 3
    client.close()
    assert len(other_torchserve.received) == 3


def test_a_connection_cut_before_the_answer_is_retried_once_on_the_other_replica(torchserve, other_torchserve):
    torchserve.answer("POST", "/predictions/sentiment", hang_up=True)
    other_torchserve.answer("POST", "/predictions/sentiment", body=OK)
    client = replica_client(torchserve.url, other_torchserve.url)

    assert client.classify(["good"], "rid") == [{"label": "POSITIVE", "score": 0.9}]
    client.close()
    assert (len(torchserve.received), len(other_torchserve.received)) == (1, 1)
    assert torchserve.received[0][3] == other_torchserve.received[0][3]


def test_a_connection_cut_on_both_replicas_is_unavailable_after_one_retry(torchserve, other_torchserve):
    for stub in (torchserve, other_torchserve):
        stub.answer("POST", "/predictions/sentiment", hang_up=True)
    client = replica_client(torchserve.url, other_torchserve.url)

    with pytest.raises(UpstreamUnavailableError):
        client.classify(["good"], "rid")
    client.close()
    assert len(torchserve.received) + len(other_torchserve.received) == 2


def test_a_read_timeout_is_not_retried_on_the_other_replica(torchserve, other_torchserve):
    torchserve.answer("POST", "/predictions/sentiment", body=OK, delay_s=1.0)
    other_torchserve.answer("POST", "/predictions/sentiment", body=OK)
    client = replica_client(torchserve.url, other_torchserve.url, read_timeout_s=0.6)

    with pytest.raises(UpstreamTimeoutError):
        client.classify(["good"], "rid")
    client.close()
    assert other_torchserve.received == []


def test_a_replica_without_a_worker_hands_the_request_to_the_other(torchserve, other_torchserve):
    torchserve.answer("POST", "/predictions/sentiment", status=503, body=NO_WORKER)
    other_torchserve.answer("POST", "/predictions/sentiment", body=OK)
    client = replica_client(torchserve.url, other_torchserve.url)

    assert client.classify(["good"], "rid") == [{"label": "POSITIVE", "score": 0.9}]
    client.close()


def test_a_handler_error_is_not_retried_on_the_other_replica(torchserve, other_torchserve):
    torchserve.answer("POST", "/predictions/sentiment", status=503, body=HANDLER_FAILED)
    other_torchserve.answer("POST", "/predictions/sentiment", body=OK)
    client = replica_client(torchserve.url, other_torchserve.url)

    with pytest.raises(UpstreamError):
        client.classify(["good"], "rid")
    client.close()
    assert other_torchserve.received == []


def test_ready_while_one_replica_of_two_is(torchserve):
    answer_ready(torchserve)
    client = replica_client(f"http://127.0.0.1:{free_port()}", torchserve.url)

    assert client.is_ready() is True
    client.close()


def test_not_ready_when_no_replica_has_a_loaded_worker(torchserve, other_torchserve):
    for stub in (torchserve, other_torchserve):
        stub.answer("GET", "/ping", body={"status": "Healthy"})
        stub.answer("POST", "/predictions/sentiment" + DESCRIBE, status=503, body=NO_WORKER)
    client = replica_client(torchserve.url, other_torchserve.url)

    assert client.is_ready() is False
    client.close()
