"""Two real TorchServes on loopback behind one facade client: one killed under load costs no request."""

import os
import signal
import threading
import time

import pytest

from facade.errors import UpstreamError
from facade.predictor import TorchServeClient
from facade.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 3


def steady_classify(client, stop):
    """Keep CLIENTS threads classifying; return (answered, failures) lists they fill."""
    answered, failures = [], []

    def loop(number):
        while not stop.is_set():
            try:
                client.classify(["A wonderful, moving film."], f"load-{number}-{len(answered)}")
                answered.append(time.monotonic())
            except UpstreamError as exc:
                failures.append(f"{type(exc).__name__}: {exc.message}")

    threads = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    return threads, answered, failures


def test_killing_one_of_two_torchserves_under_load_loses_no_request_and_stays_ready(two_torchserves):
    (first, first_process), (second, _) = two_torchserves
    client = TorchServeClient(Settings(torchserve_url=f"{first.inference_url},{second.inference_url}"))
    stop = threading.Event()
    threads, answered, failures = steady_classify(client, stop)
    try:
        time.sleep(1.0)
        assert failures == [] and len(answered) > 0
        # What the kernel does to a killed container: every process gone at once, sockets reset.
        os.killpg(first_process.pid, signal.SIGKILL)
        killed = time.monotonic()
        while sum(1 for moment in list(answered) if moment > killed + 1) < 2 * CLIENTS:
            assert time.monotonic() - killed < 30, "the load stalled after the kill"
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)

    assert failures == []
    assert client.is_ready() is True
    client.close()
