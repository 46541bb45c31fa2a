"""test_app.py against a small local stand-in of the service (http.server on loopback; no network)."""

import email.utils
import io
import json
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import test_app


class StandIn(BaseHTTPRequestHandler):
    """Answers like the service: "good" texts are POSITIVE; "boom" gets a 503, "html" a non-JSON 502,
    "slow" an answer after a second; replicas stand-1 and stand-2 take turns.

    Overload: while `server.refusals` holds (status, code, Retry-After) answers, each request gets the
    next one; a request of more than `server.max_texts` texts (each 100 tokens), or with "huge", gets
    413 too_many_tokens worded as the service words it."""

    def do_POST(self):
        server = self.server
        with server.lock:
            server.requests += 1
            number = server.requests
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = [body["text"]] if "text" in body else body["texts"]
            server.bodies.append(body)
            server.authorizations.append(self.headers.get("Authorization"))
            time.sleep(server.delay_s)
            container = f"stand-{number % 2 + 1}"
            if "slow" in texts:
                time.sleep(1.0)
            if server.refusals:
                status, code, retry_after = server.refusals.pop(0)
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                self.reply(status, {"error": {"code": code, "message": "full"}}, container, number, headers)
            elif "huge" in texts or len(texts) > server.max_texts:
                self.reply(413, self.too_many_tokens(texts, server.max_texts), container, number)
            elif "boom" in texts:
                self.reply(503, {"error": {"code": "backend_unavailable", "message": "down"}}, container, number)
            elif "html" in texts:
                self.reply(502, "<html>bad gateway</html>", container, number)
            else:
                results = [self.result(text, body) for text in texts]
                answer = results[0] if "text" in body else {"results": results}
                self.reply(200, {**answer, "container_id": container}, container, number)
        finally:
            with server.lock:
                server.in_flight -= 1

    @staticmethod
    def result(text, body=None):
        result = {"label": "POSITIVE" if "good" in text else "NEGATIVE", "score": 0.875}
        if body and body.get("all_scores"):
            other = "NEGATIVE" if result["label"] == "POSITIVE" else "POSITIVE"
            result["scores"] = [{"label": result["label"], "score": 0.875}, {"label": other, "score": 0.125}]
        if body and body.get("truncation") == "window":
            result["windows"] = 2
        return {**result, "truncated": True} if "long" in text else result

    @staticmethod
    def too_many_tokens(texts, max_texts):
        tokens, limit = 100 * len(texts) + 1000 * texts.count("huge"), 100 * max_texts
        message = (
            f"The texts of this request come to {tokens} tokens, over the limit of {limit} tokens per request "
            f"(each text counts at most 128); split them into at least {-(-tokens // limit)} requests."
        )
        return {"error": {"code": "too_many_tokens", "message": message}}

    def reply(self, status, body, container, number, headers=None):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Container-ID", container)
        self.send_header("X-Request-ID", f"req-{number}")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.requests = server.in_flight = server.max_in_flight = 0
    server.delay_s = 0.0
    server.bodies = []
    server.refusals = []
    server.max_texts = 64
    server.authorizations = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def dead_url():
    """A loopback URL on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class TerminalStream(io.StringIO):
    def isatty(self):
        return True


def run(capsys, *argv):
    status = test_app.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_seed_sentences_print_one_line_each_and_exit_0(service, capsys):
    status, out, err = run(capsys, "--url", service.url)

    lines = out.splitlines()
    assert status == 0
    assert err == ""
    assert len(lines) == len(test_app.SEED_TEXTS)
    assert lines[0].split()[:3] == ["NEGATIVE", "0.8750", "stand-2"]
    assert lines[0].endswith(test_app.SEED_TEXTS[0])
    assert service.bodies == [{"text": text} for text in test_app.SEED_TEXTS]


def test_json_prints_one_object_per_text_with_result_ids_and_text(service, capsys):
    status, out, _ = run(capsys, "--url", service.url, "--json", "--text", "good film", "--text", "a long dull one")

    first, second = (json.loads(line) for line in out.splitlines())
    assert status == 0
    assert first == {
        "text": "good film",
        "label": "POSITIVE",
        "score": 0.875,
        "container_id": "stand-2",
        "request_id": "req-1",
    }
    assert second["truncated"] is True
    assert second["request_id"] == "req-2"


def test_json_reports_a_failed_text_as_an_error_object_and_exits_1(service, capsys):
    status, out, err = run(capsys, "--url", service.url, "--json", "--text", "good", "--text", "boom")

    ok, failed = (json.loads(line) for line in out.splitlines())
    assert status == 1
    assert ok["label"] == "POSITIVE"
    assert failed["text"] == "boom"
    assert failed["error"] == {
        "status": 503,
        "code": "backend_unavailable",
        "message": "HTTP 503 backend_unavailable: down",
    }
    assert failed["request_id"] == "req-2"
    assert "backend_unavailable" in err


def test_an_answer_that_is_not_the_services_json_is_named_as_such(service, capsys):
    status, _, err = run(capsys, "--url", service.url, "--text", "html")

    assert status == 1
    assert "HTTP 502" in err
    assert "is --url the sentiment service?" in err


def test_no_answer_in_time_says_what_to_do(service, capsys):
    status, _, err = run(capsys, "--url", service.url, "--text", "slow", "--timeout", "0.2")

    assert status == 1
    assert f"no answer from {service.url} within 0.2 s" in err
    assert "--timeout" in err


def test_file_texts_go_in_batches_in_order_without_a_bar_when_stderr_is_not_a_terminal(service, capsys, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("good one\n\nbad two\ngood three\nbad four\ngood five\n", encoding="utf-8")

    status, out, err = run(capsys, "--url", service.url, "--file", str(reviews), "--batch-size", "2")

    assert status == 0
    assert err == ""
    assert [line.split()[-2] + " " + line.split()[-1] for line in out.splitlines()] == [
        "good one",
        "bad two",
        "good three",
        "bad four",
        "good five",
    ]
    assert [len(body["texts"]) for body in service.bodies] == [2, 2, 1]


def test_file_progress_bar_is_drawn_on_a_terminal(service, capsys, tmp_path, monkeypatch):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("".join(f"text {n}\n" for n in range(10)), encoding="utf-8")
    terminal = TerminalStream()
    monkeypatch.setattr("sys.stderr", terminal)

    status = test_app.main(["--url", service.url, "--file", str(reviews), "--batch-size", "3"])

    assert status == 0
    drawn = terminal.getvalue()
    assert "\r[" in drawn
    assert "10/10 texts 100%" in drawn
    assert drawn.endswith("\n")
    assert len(capsys.readouterr().out.splitlines()) == 10


def test_concurrency_keeps_output_in_input_order(service, capsys):
    service.delay_s = 0.05
    texts = [f"good {n}" for n in range(8)]

    status, out, _ = run(capsys, "--url", service.url, "--concurrency", "4", *[f"--text={t}" for t in texts])

    assert status == 0
    assert [line.split(None, 3)[3] for line in out.splitlines()] == texts
    assert service.max_in_flight > 1


def test_smoke_load_sends_the_requests_concurrently_and_summarises(service, capsys):
    service.delay_s = 0.02

    status, out, _ = run(capsys, "--url", service.url, "--requests", "12", "--concurrency", "4")

    assert status == 0
    assert service.requests == 12
    assert service.max_in_flight > 1
    assert "requests:      12 to " in out
    assert "4 at a time" in out
    assert "requests/s" in out
    assert "p50" in out and "p95" in out
    assert "errors:        0" in out
    assert "container IDs: 2 (stand-1 x6, stand-2 x6)" in out


def test_smoke_load_as_json_counts_errors_by_code(service, capsys):
    status, out, _ = run(
        capsys,
        "--url",
        service.url,
        "--json",
        "--requests",
        "6",
        "--concurrency",
        "2",
        "--text",
        "good",
        "--text",
        "boom",
    )

    summary = json.loads(out)
    assert status == 1
    assert (summary["requests"], summary["concurrency"], summary["errors"]) == (6, 2, 3)
    assert summary["errors_by_code"] == {"backend_unavailable": 3}
    assert sum(summary["container_ids"].values()) == 3
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] <= summary["latency_ms"]["max"]
    assert summary["requests_per_s"] > 0


def test_connection_refused_is_one_clear_line_and_exit_3(dead_url, capsys):
    status, out, err = run(capsys, "--url", dead_url, "--text", "a", "--text", "b", "--text", "c")

    assert status == 3
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: cannot connect to {dead_url}: connection refused.")
    assert "make up" in err
    assert "--url" in err


def test_connection_refused_in_json_mode_is_also_machine_readable(dead_url, capsys):
    status, out, _ = run(capsys, "--url", dead_url, "--json", "--text", "a")

    assert status == 3
    assert json.loads(out)["error"]["code"] == "unreachable"


def test_smoke_load_against_nothing_stops_early_with_exit_3(dead_url, capsys):
    status, out, err = run(capsys, "--url", dead_url, "--requests", "500", "--concurrency", "2")

    assert status == 3
    assert "connection refused" in err
    assert int(out.split()[1]) < 500  # it stopped sending


@pytest.mark.parametrize(
    "argv",
    [
        ["--concurrency", "0"],
        ["--requests", "-1"],
        ["--timeout", "0"],
        ["--timeout", "soon"],
        ["--batch-size", "65"],
        ["--url", "localhost:8080"],
        ["--retries", "-1"],
        ["--max-wait", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        test_app.main(argv)

    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_429_and_503_with_retry_after_are_retried_after_the_wait_and_the_client_says_so(service, capsys):
    service.refusals = [(503, "backend_unavailable", "0"), (429, "rate_limited", "0")]

    status, out, err = run(capsys, "--url", service.url, "--text", "good film")

    assert status == 0
    assert out.split()[0] == "POSITIVE"
    assert service.requests == 3
    assert err.splitlines() == [
        "note: HTTP 503 backend_unavailable: retry 1 of 3 in 0 s (Retry-After)",
        "note: HTTP 429 rate_limited: retry 2 of 3 in 0 s (Retry-After)",
    ]


def test_retries_are_bounded_and_the_last_answer_is_reported(service, capsys):
    service.refusals = [(503, "backend_unavailable", "0")] * 5

    status, out, err = run(capsys, "--url", service.url, "--retries", "2", "--text", "good")

    assert status == 1
    assert out == ""
    assert service.requests == 3
    assert "retry 2 of 2" in err
    assert err.splitlines()[-1].startswith("error: HTTP 503 backend_unavailable: full")


def test_the_wait_is_capped_by_max_wait_whatever_retry_after_says(service, capsys):
    service.refusals = [(429, "rate_limited", "3600")]

    started = time.monotonic()
    status, _, err = run(capsys, "--url", service.url, "--max-wait", "0.2", "--text", "good")

    assert status == 0
    assert time.monotonic() - started < 3
    assert "retry 1 of 3 in 0.2 s" in err


@pytest.mark.parametrize(("retry_after", "retries"), [(None, "3"), ("0", "0")])
def test_a_503_without_retry_after_or_with_retries_0_is_reported_at_once(service, capsys, retry_after, retries):
    service.refusals = [(503, "backend_unavailable", retry_after)]

    status, _, err = run(capsys, "--url", service.url, "--retries", retries, "--text", "good")

    assert status == 1
    assert service.requests == 1
    assert "note:" not in err


def test_retry_after_in_seconds_or_as_an_http_date():
    assert test_app.retry_after_s("2") == 2.0
    assert test_app.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert 50 < test_app.retry_after_s(email.utils.formatdate(time.time() + 60, usegmt=True)) <= 60
    assert test_app.retry_after_s("soon") is None
    assert test_app.retry_after_s(None) is None


def test_413_too_many_tokens_splits_the_batch_as_the_answer_says_and_keeps_input_order(service, capsys, tmp_path):
    service.max_texts = 3
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("".join(f"good {n}\n" for n in range(8)), encoding="utf-8")

    status, out, err = run(capsys, "--url", service.url, "--file", str(reviews), "--batch-size", "8")

    assert status == 0
    assert [line.split()[-1] for line in out.splitlines()] == [str(n) for n in range(8)]
    # 800 tokens over a limit of 300: "split them into at least 3 requests".
    assert [len(body["texts"]) for body in service.bodies] == [8, 3, 3, 2]
    assert err == "note: HTTP 413 too_many_tokens: splitting 8 texts into 3 requests, as the answer says\n"


def test_parts_still_over_the_limit_are_split_again_until_only_the_text_too_large_is_left(service, capsys, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("good a\ngood b\nhuge\ngood c\n", encoding="utf-8")

    status, out, err = run(capsys, "--url", service.url, "--file", str(reviews), "--batch-size", "4")

    assert status == 1
    assert [line.split()[-1] for line in out.splitlines()] == ["a", "b", "c"]
    assert [body["texts"] for body in service.bodies] == [
        ["good a", "good b", "huge", "good c"],
        ["good a", "good b"],
        ["huge", "good c"],
        ["huge"],
        ["good c"],
    ]
    assert err.count("note: HTTP 413") == 2
    assert "HTTP 413 too_many_tokens" in err.splitlines()[-1] and "'huge'" in err.splitlines()[-1]


def test_a_single_text_over_the_limit_is_reported_not_retried(service, capsys):
    status, out, err = run(capsys, "--url", service.url, "--text", "huge")

    assert status == 1
    assert out == ""
    assert service.requests == 1
    assert "HTTP 413 too_many_tokens" in err
    assert "note:" not in err


def test_the_split_count_comes_from_the_answers_fields_else_its_message():
    assert test_app.split_into({"tokens": 900, "max_request_tokens": 200}, "") == 5
    assert test_app.split_into({}, "... split them into at least 4 requests.") == 4
    assert test_app.split_into({}, "too many tokens") == 2
    assert test_app.split_into({}, "split them into at least 1 requests.") == 2


def test_unreadable_file_exits_2(tmp_path, capsys):
    status, _, err = run(capsys, "--file", str(tmp_path / "missing.txt"))

    assert status == 2
    assert "cannot read" in err


def published_ports():
    """Return {where: the default port nginx is published on} for every way of starting the service."""
    from stack.launcher import StackSettings
    from tests.conftest import PROJECT_DIR

    def default_in(path, pattern):
        return int(re.search(pattern, (PROJECT_DIR / path).read_text(), re.MULTILINE).group(1))

    return {
        "make up": StackSettings.http_port,
        "docker-compose.yml": default_in("docker-compose.yml", r"\$\{HTTP_PORT:-(\d+)\}:8080"),
        ".env.example": default_in(".env.example", r"^HTTP_PORT=(\d+)$"),
        "deploy/swarm/stack.yml": default_in("deploy/swarm/stack.yml", r'published: "\$\{HTTP_PORT:-(\d+)\}"'),
        "deploy/swarm/swarm.sh": default_in("deploy/swarm/swarm.sh", r'^HTTP_PORT="\$\{HTTP_PORT:-(\d+)\}"'),
    }


def test_the_default_url_is_where_every_deployment_publishes_the_service():
    port = urllib.parse.urlsplit(test_app.DEFAULT_URL).port
    assert published_ports() == dict.fromkeys(published_ports(), port)


def test_options_are_sent_and_every_score_and_the_windows_printed(service, capsys):
    status, out, _ = run(capsys, "--url", service.url, "--text", "good long", "--all-scores", "--truncation", "window")
    assert status == 0
    assert service.bodies == [{"text": "good long", "all_scores": True, "truncation": "window"}]
    assert out.strip().endswith("good long (truncated) (2 windows) POSITIVE=0.8750 NEGATIVE=0.1250")


def test_json_output_carries_the_scores_and_windows(service, capsys):
    status, out, _ = run(
        capsys, "--url", service.url, "--text", "good", "--all-scores", "--truncation", "window", "--json"
    )
    item = json.loads(out)
    assert status == 0
    assert item["windows"] == 2 and [entry["label"] for entry in item["scores"]] == ["POSITIVE", "NEGATIVE"]


def test_an_unknown_truncation_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        test_app.main(["--truncation", "middle"])
    assert raised.value.code == 2


def test_the_api_key_goes_in_the_authorization_header(service, capsys, monkeypatch):
    monkeypatch.delenv("SENTIMENT_API_KEY", raising=False)
    run(capsys, "--url", service.url, "--text", "good")
    run(capsys, "--url", service.url, "--text", "good", "--api-key", "s3cret")
    monkeypatch.setenv("SENTIMENT_API_KEY", "from-env")
    run(capsys, "--url", service.url, "--requests", "1")
    assert service.authorizations == [None, "Bearer s3cret", "Bearer from-env"]
