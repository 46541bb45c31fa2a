"""Which TorchServe replica a request goes to, and whether a failed one goes again to another."""

import socket
import struct
import threading

import pytest
import urllib3

from facade.predictor import replica_pools
from facade.replicas import (
    CONNECT,
    MIN_RETRY_S,
    NOT_SERVED,
    RESET,
    TIMEOUT,
    UNANSWERED,
    Replicas,
    failure_kind,
    pick,
    readiness_order,
    resolved_urls,
    retry_target,
)
from stack.private import free_port

A, B, C = "http://10.0.0.1:8090", "http://10.0.0.2:8090", "http://10.0.0.3:8090"


def test_requests_go_round_robin_over_the_replicas_not_down():
    assert [pick([A, B, C], set(), turn) for turn in range(4)] == [A, B, C, A]
    assert [pick([A, B, C], {B}, turn) for turn in range(4)] == [A, C, A, C]


def test_when_every_replica_is_down_requests_still_go_round_robin_over_all():
    assert [pick([A, B], {A, B}, turn) for turn in range(3)] == [A, B, A]


@pytest.mark.parametrize("kind", [CONNECT, RESET, NOT_SERVED])
def test_a_request_that_failed_before_an_answer_goes_once_to_another_replica(kind):
    assert retry_target(kind, A, [A, B], set(), left_s=5.0) == B


def test_the_retry_prefers_a_replica_not_known_to_be_down():
    assert retry_target(RESET, A, [A, B, C], {A, B}, left_s=5.0) == C


def test_a_read_timeout_is_never_retried_the_job_may_still_be_running():
    assert retry_target(TIMEOUT, A, [A, B], set(), left_s=5.0) is None


@pytest.mark.parametrize("kind", [CONNECT, RESET, NOT_SERVED])
def test_no_retry_without_enough_of_the_deadline_left(kind):
    assert retry_target(kind, A, [A, B], set(), left_s=MIN_RETRY_S - 0.01) is None


def test_with_one_replica_only_a_request_that_never_left_is_sent_to_it_again():
    assert retry_target(CONNECT, A, [A], set(), left_s=5.0) == A
    assert retry_target(RESET, A, [A], set(), left_s=5.0) is None
    assert retry_target(NOT_SERVED, A, [A], set(), left_s=5.0) is None


def test_each_address_becomes_a_url_with_the_port_and_ipv6_in_brackets():
    assert resolved_urls("http://torchserve:8090/", ["10.0.1.5", "fd00::7"]) == [
        "http://10.0.1.5:8090",
        "http://[fd00::7]:8090",
    ]


class FakeDns:
    """A resolver whose answer the test changes, counting lookups; raises when `answer` is an error."""

    def __init__(self, answer):
        self.answer, self.lookups = answer, 0

    def __call__(self, host, port):
        self.lookups += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_host_name_is_resolved_again_once_the_interval_has_passed():
    dns, clock = FakeDns(["10.0.0.1"]), Clock()
    replicas = Replicas(["http://torchserve:8090"], 5.0, resolve=dns, clock=clock)
    assert replicas.all() == ["http://10.0.0.1:8090"]

    dns.answer = ["10.0.0.1", "10.0.0.2"]
    clock.now += 4.9
    assert replicas.all() == ["http://10.0.0.1:8090"]
    clock.now += 0.2
    assert replicas.all() == ["http://10.0.0.1:8090", "http://10.0.0.2:8090"]
    assert dns.lookups == 2


def test_a_failed_replica_is_skipped_and_the_name_resolved_again_at_once():
    dns, clock = FakeDns(["10.0.0.1", "10.0.0.2"]), Clock()
    replicas = Replicas(["http://torchserve:8090"], 5.0, resolve=dns, clock=clock)
    replicas.all()

    replicas.failed("http://10.0.0.1:8090")

    assert [replicas.next() for _ in range(3)] == ["http://10.0.0.2:8090"] * 3
    assert dns.lookups == 2
    clock.now += 5.0
    assert replicas.down() == set()


def test_a_failed_lookup_keeps_the_replicas_known_before_and_a_first_one_the_name_itself():
    dns, clock = FakeDns(socket.gaierror("no such host")), Clock()
    replicas = Replicas(["http://torchserve:8090"], 5.0, resolve=dns, clock=clock)
    assert replicas.all() == ["http://torchserve:8090"]

    dns.answer = ["10.0.0.1"]
    clock.now += 5.0
    assert replicas.all() == ["http://10.0.0.1:8090"]
    dns.answer = socket.gaierror("temporary failure")
    clock.now += 5.0
    assert replicas.all() == ["http://10.0.0.1:8090"]


def test_while_one_request_waits_for_a_slow_lookup_the_others_use_the_replicas_known_before():
    entered, release, clock = threading.Event(), threading.Event(), Clock()
    answers = iter([["10.0.0.1"], ["10.0.0.1", "10.0.0.2"]])

    def slow_dns(host, port):
        addresses = next(answers)
        if len(addresses) == 2:
            entered.set()
            release.wait(5)
        return addresses

    replicas = Replicas(["http://torchserve:8090"], 5.0, resolve=slow_dns, clock=clock)
    replicas.all()
    clock.now += 5.0
    looking_up = threading.Thread(target=replicas.all)
    looking_up.start()
    assert entered.wait(5)

    assert replicas.all() == ["http://10.0.0.1:8090"]
    release.set()
    looking_up.join(5)
    assert replicas.all() == ["http://10.0.0.1:8090", "http://10.0.0.2:8090"]


def test_a_replica_is_proven_by_a_describe_job_until_it_fails_or_leaves_the_lookup():
    dns, clock = FakeDns(["10.0.0.1", "10.0.0.2"]), Clock()
    replicas = Replicas(["http://torchserve:8090"], 5.0, resolve=dns, clock=clock)
    first, second = replicas.all()
    replicas.answered_describe(first)
    replicas.answered_describe(second)
    replicas.answered_describe("http://10.9.9.9:8090")  # not a replica (any more): never proven

    replicas.failed(first)
    assert replicas.proven() == {second}
    dns.answer = ["10.0.0.1"]  # the second one's container is gone; a new one may reuse the address
    replicas.all()
    assert replicas.proven() == set()


def test_readyz_asks_proven_replicas_first_and_those_known_down_last():
    assert readiness_order([A, B, C], down={A}, proven={C}) == [C, B, A]
    assert readiness_order([A, B], down=set(), proven=set()) == [A, B]


def test_several_urls_are_the_replicas_of_each_in_turn():
    replicas = Replicas(["http://127.0.0.1:9001", "http://127.0.0.1:9002/"], 5.0)

    assert replicas.all() == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]


def serve_once(behaviour):
    """Listen on loopback; the first connection gets `behaviour(conn)`; return the URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept():
        conn, _ = listener.accept()
        with conn, listener:
            behaviour(conn)

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/"


def failure_of(url, connect_s=1.0, read_s=0.3):
    """Return the kind of failure of a POST through the facade's own pools, or None if it was answered."""
    try:
        replica_pools(1).request(
            "POST", url, body=b"{}", timeout=urllib3.Timeout(connect=connect_s, read=read_s), redirect=False
        )
    except UNANSWERED as exc:
        return failure_kind(exc)
    return None


def test_a_refused_connection_is_a_request_that_never_left():
    assert failure_of(f"http://127.0.0.1:{free_port()}/") == CONNECT


def test_a_connection_not_made_in_time_is_a_request_that_never_left():
    # A listener with a backlog of one that never accepts: once one connection waits in it, the
    # kernel drops the next ones' SYNs, and connecting times out.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener, socket.socket() as waiting:
        waiting.connect(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        assert failure_of(url, connect_s=0.3, read_s=5.0) == CONNECT


def test_a_connection_closed_after_the_request_is_a_reset():
    def read_then_close(conn):
        conn.recv(65536)

    assert failure_of(serve_once(read_then_close)) == RESET


def test_a_connection_reset_after_the_request_is_a_reset():
    def read_then_reset(conn):
        conn.recv(65536)
        # Linger on, for no time: closing sends RST (connection reset by peer) instead of FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    assert failure_of(serve_once(read_then_reset)) == RESET


def test_no_answer_within_the_read_timeout_is_a_timeout():
    stop = threading.Event()

    def read_then_wait(conn):
        conn.recv(65536)
        stop.wait(2)

    assert failure_of(serve_once(read_then_wait)) == TIMEOUT
    stop.set()
