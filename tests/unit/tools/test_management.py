"""tools/management.py: the operators' session reaches a management API on a Unix socket or over HTTP."""

import json
import socketserver
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tools import management
from tools.scale_workers import describe_model, request_scale


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with JSON naming its method and path, as a management API would."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.reply([{"modelName": "sentiment", "path": self.path, "workers": [{"status": "READY"}]}])

    def do_PUT(self):
        self.reply({"status": f"PUT {self.path}"})

    def reply(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self):
        return "unix"  # a Unix socket's peer has no address

    def log_message(self, *args):
        pass


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serving(server):
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def socket_api(tmp_path):
    path = tmp_path / "management.sock"
    server = serving(UnixHTTPServer(str(path), Recorder))
    yield f"unix:{path}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def tcp_api():
    server = serving(ThreadingHTTPServer(("127.0.0.1", 0), Recorder))
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_a_unix_socket_address_is_reached_through_the_socket(socket_api):
    session, base_url = management.management_session(socket_api)
    with session:
        answers = [session.get(f"{base_url}/models/sentiment", timeout=5).json() for _ in range(3)]
    assert [answer[0]["path"] for answer in answers] == ["/models/sentiment"] * 3


def test_the_scaling_tool_describes_and_scales_over_the_socket(socket_api):
    assert describe_model(socket_api, "sentiment")["path"] == "/models/sentiment"
    assert request_scale(socket_api, "sentiment", 2) == (
        "PUT /models/sentiment?min_worker=2&max_worker=2&synchronous=false"
    )


def test_an_http_address_still_works(tcp_api):
    assert management.request(tcp_api, "GET", "/models/sentiment", timeout=5).json()[0]["path"] == "/models/sentiment"


def test_a_missing_socket_is_a_connection_error_and_no_proxy_is_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # never used for the management API
    with pytest.raises(requests.ConnectionError):
        management.request(f"unix:{tmp_path}/absent.sock", "GET", "/models", timeout=2)


def test_prepare_gives_the_configured_socket_a_folder_only_its_user_may_enter(tmp_path, monkeypatch):
    folder = tmp_path / "management"
    folder.mkdir(mode=0o777)
    (folder / "management.sock").write_text("left by a killed TorchServe")
    monkeypatch.setenv("TS_MANAGEMENT_ADDRESS", f"unix:{folder}/management.sock")

    assert management.main(["prepare"]) == 0

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert list(folder.iterdir()) == []


def test_prepare_leaves_a_tcp_address_alone_and_refuses_other_commands(monkeypatch, capsys):
    monkeypatch.setenv("TS_MANAGEMENT_ADDRESS", "http://0.0.0.0:8091")
    assert management.main(["prepare"]) == 0
    assert management.main(["serve"]) == 2
    assert "python -m tools.management prepare" in capsys.readouterr().err
