"""When a facade process turns new work away at once, instead of letting it time out.

A request runs as jobs, one after another (facade/jobs.py). After each job the predictor projects
how long the rest will take at the pace its jobs have gone so far; when that is past the request's
deadline, the queue in front of TorchServe's worker is longer than can be served in time: the
request stops there (503 saturated, with Retry-After) instead of spending the worker's time on
an answer nobody would read, and for Retry-After seconds this process answers new requests of more
than one job 429 saturated at once, before any of their work is paid for. Requests of one job (the
light ones) are still taken: they cost one job's time, and they are what must never starve.
"""

import math
import threading
import time

# Retry-After is at least this, and at most this many times the read timeout.
MIN_RETRY_AFTER_S = 1


def projected_overrun_s(elapsed_s: float, jobs_done: int, jobs_left: int, left_s: float) -> float:
    """Return how many seconds past the deadline the jobs left would end at the pace so far (<= 0: in time)."""
    if jobs_done == 0 or jobs_left == 0:
        return 0.0
    return elapsed_s / jobs_done * jobs_left - left_s


def retry_after_s(overrun_s: float, read_timeout_s: float) -> int:
    """Return the Retry-After after a projected overrun of overrun_s: about what the queue needs to drain."""
    return max(MIN_RETRY_AFTER_S, min(math.ceil(overrun_s), math.ceil(read_timeout_s)))


class Saturation:
    """Until when this process answers new multi-job requests 429 (one per facade worker process)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0

    def mark(self, seconds: float) -> None:
        """Refuse new multi-job requests for the next `seconds`."""
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def retry_after_s(self) -> int:
        """Return the seconds left of the refusal period (0: not saturated)."""
        with self._lock:
            left = self._until - self._clock()
        return math.ceil(left) if left > 0 else 0
