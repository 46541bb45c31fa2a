"""When a facade process turns new work away at once, instead of letting it time out.

A request runs as jobs, one after another (facade/jobs.py), sharing the worker with every other
request's jobs. Past the point where the requests in progress can no longer each end before their
deadline, sharing serves none of them (every one ends late); so each facade process limits how
many requests of more than one job it runs at once, and adapts that limit to what the worker
serves in time (additive increase, multiplicative decrease, as in TCP congestion control):

- after each job the predictor projects, at the pace of the request's jobs so far, when the rest
  would end; past the deadline, the request stops there (503 over_deadline, with Retry-After)
  instead of spending the worker's time on an answer nobody would read, and the limit halves;
- each request that ends in time raises it by 1/limit, up to the threads the process has;
- a new multi-job request over the limit is answered 429 saturated at once, before any of its
  work is paid for, with Retry-After the time such a request has lately taken.

Requests of one job (the light ones) are never limited: they cost one job's time, and they are
what must never starve.
"""

import math
import threading

# Gunicorn threads of each worker process that classification never takes, so that /healthz and
# /readyz always find one free: gthread hands connections to its threads in arrival order, so a
# probe would otherwise wait behind every request queued before it. Each process runs
# FACADE_THREADS classifications at once and lets WAITING_PER_THREAD times as many more wait for
# one of those slots (room for nginx spreading its connections unevenly: a 64-connection soak put
# over 32 at once on one worker); Gunicorn gets threads for all of them plus PROBE_THREADS
# (facade/gunicorn.conf.py), and a request beyond the waiting room gets 429 at once.
PROBE_THREADS = 2
WAITING_PER_THREAD = 3


def room(classify_threads: int) -> int:
    """Return how many classifications a worker process takes in, running or waiting."""
    return (1 + WAITING_PER_THREAD) * classify_threads


def gunicorn_threads(classify_threads: int) -> int:
    """Return the Gunicorn threads per worker for FACADE_THREADS: those that classify or wait, and the probes'."""
    return room(classify_threads) + PROBE_THREADS


# Retry-After is at least this.
MIN_RETRY_AFTER_S = 1
# How much of each new duration the Retry-After estimate takes in (about the last five requests).
DURATION_WEIGHT = 0.2


def projected_overrun_s(elapsed_s: float, jobs_done: int, jobs_left: int, left_s: float) -> float:
    """Return how many seconds past the deadline the jobs left would end at the pace so far (<= 0: in time)."""
    if jobs_done == 0 or jobs_left == 0:
        return 0.0
    return elapsed_s / jobs_done * jobs_left - left_s


class HeavyRequests:
    """How many multi-job requests this process runs at once, and what a refused one is told."""

    def __init__(self, ceiling: int, read_timeout_s: float):
        self._lock = threading.Lock()
        self._ceiling = max(1, ceiling)
        self._read_timeout_s = read_timeout_s
        self.limit = float(self._ceiling)
        self.in_flight = 0
        self._duration_s = 0.0

    def try_start(self) -> bool:
        """Return True (and count the request in) when one more may run now."""
        with self._lock:
            if self.in_flight + 1 > max(1, int(self.limit)):
                return False
            self.in_flight += 1
            return True

    def finish(self, in_time: bool, duration_s: float) -> None:
        """Count a started request out: in time raises the limit a little, late halves it."""
        with self._lock:
            self.in_flight -= 1
            if in_time:
                self.limit = min(self._ceiling, self.limit + 1 / self.limit)
                old = self._duration_s
                self._duration_s = duration_s if not old else (1 - DURATION_WEIGHT) * old + DURATION_WEIGHT * duration_s
            else:
                self.limit = max(1.0, self.limit / 2)

    def retry_after_s(self) -> int:
        """Return what a refused request should wait: what one took lately (1 s to one read timeout)."""
        with self._lock:
            duration = self._duration_s or self._read_timeout_s
        return max(MIN_RETRY_AFTER_S, min(math.ceil(duration), math.ceil(self._read_timeout_s)))
