"""What nginx sends to another facade, and what it never sends twice: a request that timed out.

The launcher's nginx (its rendered config, its timeouts) in front of two stand-in facades on
loopback that count the requests they get, so that a replay shows as a second count. nginx's read
timeout comes from the facade's read timeout, set low here (1 s, so nginx waits 3 s).
"""

import dataclasses
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from facade.settings import Settings as FacadeSettings
from stack.launcher import proxy_read_timeout, start_nginx, stop_nginx
from stack.private import private_stack
from stack.processes import http_status, wait_until

pytestmark = pytest.mark.integration

FACADE = FacadeSettings(connect_timeout_s=0.5, read_timeout_s=1.0)
NGINX_READ_TIMEOUT_S = int(proxy_read_timeout(FACADE).removesuffix("s"))


class CountingFacade(BaseHTTPRequestHandler):
    """Answers GET at once; a POST is counted, then handled as the server's `mode` says:
    "answer" (200 JSON), "stall" (no answer for longer than nginx waits, then the connection
    closes) or "reset" (the connection closes after the request was read, without an answer)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.answer(200, {"status": "ok"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.posts += 1
        if self.server.mode == "stall":
            time.sleep(NGINX_READ_TIMEOUT_S + 2)  # nginx has given up by now: nobody to answer
        if self.server.mode in ("stall", "reset"):
            self.close_connection = True
            return
        self.answer(200, {"label": "POSITIVE", "score": 0.9, "container_id": self.server.name})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Container-ID", self.server.name)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class SilentAddress:
    """A port whose connections are never made: a listener with a full accept queue that never
    accepts, so the kernel drops every new SYN, as packets to a removed container's address go
    nowhere. It holds the sockets that fill the queue until it is closed."""

    def __init__(self, port):
        self.posts, self.name = 0, f"silent-{port}"
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(0)
        self.fillers = []
        while True:
            filler = socket.socket()
            filler.settimeout(0.5)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                filler.close()
                break
            self.fillers.append(filler)

    def shutdown(self):
        pass

    def server_close(self):
        for sock in (*self.fillers, self.listener):
            sock.close()


def counting_facade(port, mode):
    """Start a CountingFacade on `port` in a thread; return the server."""
    server = ThreadingHTTPServer(("127.0.0.1", port), CountingFacade)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.posts, server.mode, server.name = 0, mode, f"stand-{port}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def nginx_before(tmp_path):
    """Start the launcher's nginx before the facades given to the returned function; stop everything after."""
    started = []

    def start(*modes):
        settings = dataclasses.replace(private_stack(tmp_path), facade=FACADE)
        facades = [
            SilentAddress(port) if mode == "silent" else counting_facade(port, mode)
            for port, mode in zip(settings.facade_ports, modes, strict=True)
            if mode
        ]
        started.extend(facades)
        nginx = start_nginx(settings)
        started.append(nginx)
        wait_until(
            lambda: http_status(settings.url + "healthz") == 200,
            timeout_s=20,
            what="nginx in front of the stand-in facades",
            log_path=settings.log_dir,
            process=nginx,
        )
        return settings.url, facades

    yield start
    for thing in started:
        if isinstance(thing, ThreadingHTTPServer | SilentAddress):
            thing.shutdown()
            thing.server_close()
        else:
            assert stop_nginx(thing.pid, timeout_s=NGINX_READ_TIMEOUT_S + 5)
            thing.wait(timeout=10)


def test_a_post_that_times_out_reaches_a_facade_exactly_once_and_gets_json_504(nginx_before):
    url, facades = nginx_before("stall", "stall")

    started = time.monotonic()
    answer = requests.post(url, json={"text": "fine"}, timeout=4 * NGINX_READ_TIMEOUT_S)
    waited = time.monotonic() - started

    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "backend_timeout"
    assert sum(facade.posts for facade in facades) == 1
    # One read timeout, not one per facade.
    assert NGINX_READ_TIMEOUT_S <= waited < 2 * NGINX_READ_TIMEOUT_S


def test_a_post_whose_connection_drops_without_an_answer_goes_to_the_other_facade(nginx_before):
    url, (dropping, answering) = nginx_before("reset", "answer")

    answers = [requests.post(url, json={"text": "fine"}, timeout=4 * NGINX_READ_TIMEOUT_S) for _ in range(4)]

    # Whichever facade nginx picks first, every request is answered by the one that answers.
    assert [answer.status_code for answer in answers] == [200] * 4
    assert {answer.json()["container_id"] for answer in answers} == {answering.name}
    assert answering.posts == 4
    # Each request reached the dropping facade at most once: no loop between the two.
    assert dropping.posts <= 4


def test_a_post_dropped_by_every_facade_gets_json_503_after_one_try_each(nginx_before):
    url, facades = nginx_before("reset", "reset")

    answer = requests.post(url, json={"text": "fine"}, timeout=4 * NGINX_READ_TIMEOUT_S)

    # nginx's own answer for a facade that failed it (502 and 503 share it): JSON, with Retry-After.
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "backend_unavailable"
    assert answer.headers["Retry-After"]
    assert [facade.posts for facade in facades] == [1, 1]


def test_a_post_to_a_facade_that_refuses_connections_goes_to_the_other_one(nginx_before):
    # The first facade's port has nothing listening: the request was never sent, so nginx moves on.
    url, (live,) = nginx_before(None, "answer")

    answers = [requests.post(url, json={"text": "fine"}, timeout=10) for _ in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 6
    assert {answer.json()["container_id"] for answer in answers} == {live.name}
    assert live.posts == 6


def test_a_post_to_an_address_where_connections_go_nowhere_goes_to_the_other_facade(nginx_before):
    # A facade Docker removed while nginx still had its address from DNS: no refusal ever comes.
    url, (_silent, live) = nginx_before("silent", "answer")

    answers = [requests.post(url, json={"text": "fine"}, timeout=4 * NGINX_READ_TIMEOUT_S) for _ in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 6
    assert {answer.json()["container_id"] for answer in answers} == {live.name}
    assert live.posts == 6
