"""Steady load through a stack's public URL, and what it saw: the model-upgrade tests' yardstick."""

import threading
import time
from contextlib import contextmanager

import requests

# Four texts per request: one job, answered by one model version (X-Model-Version).
TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "It is worth it", "fine"]


class Load:
    """What steady clients saw: requests sent, failures, the versions that answered, the slowest answer."""

    def __init__(self):
        self.sent, self.failures, self.versions, self.slowest_s = 0, [], set(), 0.0

    def summary(self):
        """Return the figures as one line."""
        return (
            f"{self.sent} requests, {len(self.failures)} lost, slowest {self.slowest_s:.2f} s, "
            f"versions {sorted(self.versions)}"
        )


@contextmanager
def steady_load(url, clients=4, timeout_s=30):
    """Keep `clients` clients POSTing TEXTS to `url` back to back; yield the Load they fill."""
    load, lock, stop = Load(), threading.Lock(), threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    response = session.post(url, json={"texts": TEXTS}, timeout=timeout_s)
                    outcome = response.status_code, response.headers.get("X-Model-Version"), response.text[:200]
                except requests.RequestException as exc:
                    outcome = None, None, repr(exc)
                with lock:
                    load.sent += 1
                    load.slowest_s = max(load.slowest_s, time.monotonic() - start)
                    if outcome[0] == 200:
                        load.versions.add(outcome[1])
                    else:
                        load.failures.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout_s + 10)
