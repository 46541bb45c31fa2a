"""Each answer leaves the facade in one write, its headers and its body together.

Gunicorn writes an answer's headers and then its body, two writes, and a thread switch can come
between them. A facade killed there has sent nginx the headers only: nginx has already passed them
on, so it can neither retry the request on another facade nor answer it with JSON, and the client
gets a cut answer. Sent in one write, an answer is either wholly sent or not sent at all, and a
request whose facade died before answering goes to another facade (nginx's proxy_next_upstream).
"""

import functools

from gunicorn.http import wsgi


class _Collected:
    """Stands in for the socket while Gunicorn frames one answer: keeps what it would send."""

    def __init__(self):
        self.parts = []

    def sendall(self, data):
        self.parts.append(bytes(data))


def in_one_write(write):
    """Return Gunicorn's Response.write, changed to send a whole answer (headers and body) at once.

    A whole answer is the first write of a response with a Content-Length equal to its size, which
    is how Flask hands over every answer the facade makes. Anything else (chunked, a body in several
    parts) is written as Gunicorn writes it.
    """

    @functools.wraps(write)  # keeps Gunicorn's own write reachable as __wrapped__
    def write_whole_answer(self, data):
        whole = (
            not self.headers_sent and not self.chunked and isinstance(data, bytes) and self.response_length == len(data)
        )
        if not whole:
            return write(self, data)
        sock, collected = self.sock, _Collected()
        self.sock = collected
        try:
            write(self, data)
        finally:
            self.sock = sock
        sock.sendall(b"".join(collected.parts))
        return None

    write_whole_answer.in_one_write = True
    return write_whole_answer


def send_answers_in_one_write():
    """Make every Gunicorn worker of this process send whole answers in one write (idempotent)."""
    if not getattr(wsgi.Response.write, "in_one_write", False):
        wsgi.Response.write = in_one_write(wsgi.Response.write)
