"""TorchServe's management API for the operators' tools: its address, its socket's folder, a Session.

The management API listens on a Unix domain socket (management_address=unix:/path/to.sock in
config.properties, TS_MANAGEMENT_ADDRESS): the socket's file permissions, inside a folder only
TorchServe's user may enter, are its key (docs/security.md). An http:// or https:// address still
works for a deployment that configures one.

Usage: python -m tools.management prepare   (before TorchServe starts: the Docker image's CMD)
"""

import os
import socket
import sys
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from tools.torchserve_config import management_address, properties

UNIX = "unix:"
# The host name requests sees for a socket address (any name would do: the adapter ignores it).
SOCKET_BASE_URL = "http://management.sock"
# The longest path of a Unix socket Linux takes (sun_path holds 108 bytes, the last one a NUL).
MAX_SOCKET_PATH_BYTES = 107


class UnixConnection(HTTPConnection):
    """An HTTP/1.1 connection over a Unix domain socket instead of TCP."""

    def __init__(self, socket_path: str, **kwargs):
        super().__init__("localhost", **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        return sock


class UnixConnectionPool(HTTPConnectionPool):
    """A urllib3 pool whose connections go to one Unix domain socket."""

    def __init__(self, socket_path: str, **kwargs):
        super().__init__("localhost", **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> UnixConnection:
        self.num_connections += 1
        return UnixConnection(self.socket_path, timeout=self.timeout.connect_timeout)


class UnixAdapter(HTTPAdapter):
    """Sends every request it is mounted for to one Unix domain socket."""

    def __init__(self, socket_path: str):
        super().__init__(max_retries=0)
        self._pool = UnixConnectionPool(socket_path)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def close(self) -> None:
        super().close()
        self._pool.close()


def socket_path(address: str) -> str | None:
    """Return the socket file of a `unix:/path` address, or None for an http(s) URL."""
    return address[len(UNIX) :] if address.startswith(UNIX) else None


def configured_address(environ=os.environ) -> str:
    """Return the address TorchServe's management API listens on (config.properties, TS_ variables applied)."""
    return management_address(properties(environ=environ))


def default_address(environ=os.environ) -> str:
    """Return TORCHSERVE_MANAGEMENT_URL, else the address config.properties gives the management API."""
    return environ.get("TORCHSERVE_MANAGEMENT_URL") or configured_address(environ)


def prepare_socket(address: str) -> None:
    """Before TorchServe starts: make the socket's folder, mode 0700 (its user's alone), and remove a
    socket a killed TorchServe left there (TorchServe cannot bind over it). Nothing for a TCP address."""
    path = socket_path(address)
    if path is None:
        return
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"the socket path {path} is longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket takes")
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # also when the folder was left with another mode
    Path(path).unlink(missing_ok=True)


def management_session(address: str) -> tuple[requests.Session, str]:
    """Return a Session that reaches the management API at `address`, and the base URL of its paths."""
    session = requests.Session()
    # The management API is private: no proxy from HTTP_PROXY and friends may carry its traffic.
    session.trust_env = False
    path = socket_path(address)
    if path is None:
        return session, address.rstrip("/")
    session.mount(SOCKET_BASE_URL + "/", UnixAdapter(path))
    return session, SOCKET_BASE_URL


def request(address: str, method: str, path: str, **kwargs) -> requests.Response:
    """Send one request to the management API at `address` (`path` from /models on) and return the answer."""
    session, base_url = management_session(address)
    with session:
        return session.request(method, base_url + path, allow_redirects=False, **kwargs)


def main(argv=None) -> int:
    """`prepare`: get the configured socket's folder ready for TorchServe; exit 1 with the reason if it cannot be."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["prepare"]:
        print(__doc__.rsplit("Usage: ", 1)[1].strip(), file=sys.stderr)
        return 2
    try:
        prepare_socket(configured_address())
    except (OSError, ValueError) as exc:
        print(f"error: cannot prepare the management API's socket: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
