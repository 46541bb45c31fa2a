"""TorchServe replicas: every address its URLs resolve to, which one a request goes to, and when
a request that failed on one goes again to another.

Swarm (`endpoint_mode: dnsrr`) and a Kubernetes headless Service answer one A record per running
replica; Compose's DNS does the same for `--scale torchserve=N`. A comma-separated URL list names
replicas on other ports (the native launcher). docs/operations.md, "Model-server failover".
"""

import ipaddress
import itertools
import logging
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

log = logging.getLogger(__name__)

# How a request to one replica failed: the request never left ("connect"), the connection broke
# before any answer ("reset"), the replica answered that it runs no worker for the model
# ("not_served"), or no answer came in time ("timeout": the job may still be running there).
CONNECT, RESET, NOT_SERVED, TIMEOUT = "connect", "reset", "not_served", "timeout"
# Not worth a retry with less time than this left of the request's deadline.
MIN_RETRY_S = 0.5
# What urllib3, with retries off, raises when a replica gave no answer: a connection not made
# (NewConnectionError is a ConnectTimeoutError), no answer in time, or a connection that broke.
UNANSWERED = (Urllib3TimeoutError, ProtocolError, SSLError)


def failure_kind(exc: HTTPError) -> str:
    """Return how a request failed: CONNECT, RESET or TIMEOUT (never sent, cut, or unanswered in time)."""
    if isinstance(exc, ConnectTimeoutError):  # also refused, unreachable or a name not found
        return CONNECT
    if isinstance(exc, Urllib3TimeoutError):
        return TIMEOUT
    return RESET


def retry_target(kind: str, failed: str, replicas: list[str], down: set[str], left_s: float) -> str | None:
    """Return the replica to send a failed request to once more, or None to give up.

    Never after a timeout: the job may still be running, and a second copy would double the load
    exactly when the replicas are slowest. A connect failure is retried on the same replica when
    there is no other (the request never left, as urllib3's connect retry did before); a reset or
    a "no worker" answer only on another one.
    """
    if kind == TIMEOUT or left_s < MIN_RETRY_S:
        return None
    others = [replica for replica in replicas if replica != failed]
    if not others:
        return failed if kind == CONNECT else None
    healthy = [replica for replica in others if replica not in down]
    return (healthy or others)[0]


def readiness_order(replicas: list[str], down: set[str], proven: set[str]) -> list[str]:
    """Return the order /readyz asks the replicas in: proven and not down first, down ones last."""
    return sorted(replicas, key=lambda url: (url in down, url not in proven))


def pick(replicas: list[str], down: set[str], turn: int) -> str:
    """Return the replica for the turn-th request: round robin over those not down (all when all are)."""
    healthy = [replica for replica in replicas if replica not in down] or replicas
    return healthy[turn % len(healthy)]


def resolved_urls(url: str, addresses: list[str]) -> list[str]:
    """Return `url` once per address, with the address in place of its host name."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    hosts = [f"[{address}]" if ipaddress.ip_address(address).version == 6 else address for address in addresses]
    return [urlunsplit(parts._replace(netloc=f"{host}{port}")).rstrip("/") for host in hosts]


def addresses_of(host: str, port: int) -> list[str]:
    """Return every address `host` resolves to for TCP, in the resolver's order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class Replicas:
    """The base URLs of every TorchServe replica behind a set of URLs, resolved again every few seconds.

    A replica is *proven* once it answered a describe job (a loaded worker answered) since it was
    found or last failed; /readyz counts a replica that answers /ping only when it is proven.
    """

    def __init__(self, urls: list[str], resolve_every_s: float, resolve=addresses_of, clock=time.monotonic):
        self._urls = [url.rstrip("/") for url in urls]
        self._resolve_every_s = resolve_every_s
        self._resolve, self._clock = resolve, clock
        self._lock = threading.Lock()
        self._known: list[str] = []
        self._resolved_at = -float("inf")
        self._resolving = False
        # A replica that failed is skipped until the next resolve (it is then gone or back).
        self._down: dict[str, float] = {}
        self._proven: set[str] = set()
        self._turns = itertools.count()

    def all(self) -> list[str]:
        """Return every replica's base URL, resolving the names again when the last time is old.

        One thread looks the names up while the others go on with the replicas known before (the
        names themselves before the first lookup): a slow DNS server delays one request, not all.
        """
        with self._lock:
            due = self._clock() - self._resolved_at >= self._resolve_every_s and not self._resolving
            self._resolving = self._resolving or due
            known = self._known or self._urls
        if not due:
            return list(known)
        try:
            found = self._resolved()
        finally:
            with self._lock:
                now = self._clock()
                self._known = found or self._known or self._urls
                self._proven &= set(self._known)  # one that left and comes back is proven again
                self._resolved_at, self._resolving = now, False
                self._down = {url: until for url, until in self._down.items() if until > now}
                known = self._known
        return list(known)

    def down(self) -> set[str]:
        """Return the replicas that failed since the last resolve."""
        now = self._clock()
        with self._lock:
            return {url for url, until in self._down.items() if until > now}

    def next(self) -> str:
        """Return the replica the next request goes to."""
        return pick(self.all(), self.down(), next(self._turns))

    def failed(self, url: str) -> None:
        """Skip `url` for new requests, resolve again on the next one (the replica may be gone), and
        count it for readiness only once it answers a describe job again."""
        with self._lock:
            self._down[url] = self._clock() + self._resolve_every_s
            self._resolved_at = -float("inf")
            self._proven.discard(url)

    def proven(self) -> set[str]:
        """Return the replicas that answered a describe job since they were found or last failed."""
        with self._lock:
            return set(self._proven)

    def answered_describe(self, url: str) -> None:
        """Note that `url` answered a describe job: a worker of the model is loaded there."""
        with self._lock:
            if url in (self._known or self._urls):  # before the first lookup ends, the names themselves
                self._proven.add(url)

    def _resolved(self) -> list[str]:
        found = []
        for url in self._urls:
            parts = urlsplit(url)
            try:
                addresses = self._resolve(parts.hostname, parts.port or 80)
            except OSError as exc:
                log.warning("Could not resolve %s (%s); keeping the replicas known before", parts.hostname, exc)
                return []
            found.extend(resolved_urls(url, addresses))
        return list(dict.fromkeys(found))
