"""The facade's answers leave Gunicorn in one write (facade/wire.py)."""

import inspect
import subprocess
import sys

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from facade.wire import in_one_write
from tests.conftest import PROJECT_DIR

ANSWER = b'{"label": "POSITIVE", "score": 0.99, "container_id": "facade-1"}'


# Gunicorn's own write, even where another test has loaded the facade's config into this process.
GUNICORN_WRITE = inspect.unwrap(wsgi.Response.write)


class PlainResponse(wsgi.Response):
    write = GUNICORN_WRITE


class OneWriteResponse(wsgi.Response):
    write = in_one_write(GUNICORN_WRITE)


class RecordingSocket:
    """What Gunicorn hands the kernel, one entry per sendall."""

    def __init__(self):
        self.writes = []

    def sendall(self, data):
        self.writes.append(bytes(data))


def sent(response_class, parts, headers):
    """Return the writes of one answer of `parts` (bytes), framed by Gunicorn as `response_class`."""
    cfg = Config()
    request = next(
        RequestParser(cfg, iter([b"POST / HTTP/1.1\r\nHost: facade\r\nContent-Length: 0\r\n\r\n"]), ("127.0.0.1", 1))
    )
    sock = RecordingSocket()
    response, _ = wsgi.create(request, sock, ("127.0.0.1", 1), ("127.0.0.1", 8000), cfg)
    response.__class__ = response_class
    response.start_response("200 OK", headers)
    for part in parts:
        response.write(part)
    response.close()
    return sock.writes


def without_date(data):
    return b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"Date: "))


def test_a_whole_answer_goes_out_in_one_write_with_the_bytes_gunicorn_would_send():
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]
    plain = sent(PlainResponse, [ANSWER], headers)
    one = sent(OneWriteResponse, [ANSWER], headers)

    assert len(plain) == 2  # what a facade killed between the two writes cut in half
    assert len(one) == 1
    assert without_date(one[0]) == without_date(b"".join(plain))
    assert one[0].endswith(b"\r\n\r\n" + ANSWER)


@pytest.mark.parametrize(
    "parts, headers",
    [
        ([ANSWER[:10], ANSWER[10:]], [("Content-Length", str(len(ANSWER)))]),  # a body in two parts
        ([ANSWER, ANSWER], []),  # no Content-Length: chunked
    ],
    ids=["body-in-parts", "chunked"],
)
def test_answers_that_are_not_whole_are_written_as_gunicorn_writes_them(parts, headers):
    plain = sent(PlainResponse, parts, headers)
    one = sent(OneWriteResponse, parts, headers)

    assert [without_date(write) for write in one] == [without_date(write) for write in plain]


def test_the_facades_gunicorn_config_makes_every_answer_one_write():
    # In a fresh interpreter: loading the config changes Gunicorn's Response class for the process.
    script = (
        "import runpy; from gunicorn.http import wsgi; "
        "runpy.run_path('facade/gunicorn.conf.py'); "
        "print(getattr(wsgi.Response.write, 'in_one_write', False))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
