"""Load generation with wrk and resource sampling of the processes under test."""

import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from stack.models import SST2_DEV
from stack.processes import process_table

POST_SCRIPT = Path(__file__).resolve().parent / "post.lua"
DEV_TSV = Path(os.environ.get("BENCH_DEV_TSV") or SST2_DEV)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def labelled_sentences():
    """Return SST-2 dev as (sentence, label); a synthetic set when the file is absent."""
    if DEV_TSV.is_file():
        rows = [line.split("\t") for line in DEV_TSV.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
        return [(sentence.strip(), int(label)) for sentence, label in rows]
    print(f"note: {DEV_TSV} not found; using synthetic sentences (no accuracy figures)")
    words = [
        "the",
        "film",
        "was",
        "a",
        "truly",
        "good",
        "bad",
        "dull",
        "moving",
        "long",
        "short",
        "story",
        "of",
        "love",
        "and",
        "time",
    ]
    return [(" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 25)), i % 2) for i in range(872)]


def wrk_binary():
    """Return the wrk executable, or raise with how to get it."""
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed: apt-get install wrk (make bench does it)")
    return found


def write_bodies(texts, path):
    """Write one JSON request body per line ({"text": ...}) for the wrk script."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


# Above every timeout of the system under test (facade 15 s, nginx 30 s, TorchServe's
# responseTimeout 60 s), so a slow answer is measured as slow, or counted as the service's own
# error, never cut short by wrk (whose default, 2 s, is below one request's latency at c=64 on a
# slow CPU).
WRK_TIMEOUT_S = 120
# How long a drain may take: the requests wrk abandoned at the end of a run still run to the end.
DRAIN_TIMEOUT_S = 300
# The drain's probe requests carry this ID, so their batches are left out of the histogram.
DRAIN_REQUEST_ID = "bench-drain"


@dataclass(frozen=True)
class PointRule:
    """How long a load point runs, and when its figures mean something.

    A closed loop at concurrency c completes a request per connection only every latency: a
    point shorter than a few latencies measures the ramp and the requests cut off at its end.
    """

    floor_s: float = 15
    p50_factor: float = 20
    cap_s: float = 180
    warmup_s: float = 5

    def duration_s(self, p50_ms):
        """Return how long a point with this p50 must run (at least the floor), capped."""
        return min(self.cap_s, max(self.floor_s, math.ceil(self.p50_factor * p50_ms / 1000)))

    def next_duration_s(self, concurrency, requests, ran_s, p50_ms):
        """Return how long the next run must be, from what a run of `ran_s` seconds showed.

        Only requests that finished count in the p50, so a run shorter than the latency shows
        too few, too fast ones; a closed loop's latency is also concurrency / throughput
        (Little's law), and nothing finished means the latency exceeds the run: go to the cap.
        """
        if requests == 0:
            return self.cap_s
        return self.duration_s(max(p50_ms, 1000 * concurrency * ran_s / requests))

    def invalid_reason(self, duration_s, p50_ms, requests):
        """Return why a point of `duration_s` with this p50 and request count is invalid, or None."""
        if requests == 0:
            return f"no request completed in {duration_s:g} s"
        if duration_s < self.floor_s:
            return f"ran {duration_s:g} s, under the {self.floor_s:g} s floor"
        if duration_s < self.p50_factor * p50_ms / 1000:
            return (
                f"ran {duration_s:g} s, under {self.p50_factor:g} x p50 ({p50_ms / 1000:.1f} s); "
                f"the cap is {self.cap_s:g} s"
            )
        return None


def start_wrk(url, bodies_file, concurrency, duration_s, timeout_s=WRK_TIMEOUT_S):
    """Start wrk closed-loop at `concurrency` for `duration_s` in its own process group."""
    threads = max(1, min(concurrency, 2))
    command = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(POST_SCRIPT),
        url,
        "--",
        str(bodies_file),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def wrk_summary(process):
    """Wait for wrk and return its summary (requests, errors, latency percentiles in µs)."""
    output, _ = process.communicate()
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            summary = json.loads(line.removeprefix("WRK_JSON "))
            # Timeouts, non-2xx answers (errors_status: every status >= 400) and broken connections.
            summary["errors"] = sum(value for key, value in summary.items() if key.startswith("errors_"))
            return summary
    raise RuntimeError(f"wrk failed ({process.returncode}): {output}")


def drain(url, bodies_file, timeout_s=DRAIN_TIMEOUT_S):
    """Return once the system has finished the requests wrk abandoned when it stopped.

    wrk stops at its deadline with a request in flight on every connection; the server still
    runs them all. One probe request queues behind them, so its answer means they are done (a
    504 from the facade means they are not, yet). Without this, a point starts behind the
    previous one's backlog, which at concurrency 64 on a slow CPU is several seconds of work.
    """
    import requests

    body = Path(bodies_file).read_text().splitlines()[0].encode()
    headers = {"Content-Type": "application/json", "X-Request-ID": DRAIN_REQUEST_ID}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.post(url, data=body, headers=headers, timeout=WRK_TIMEOUT_S).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} still had not answered a probe request {timeout_s} s after a load point")


def log_size(path):
    """Return the current size of a log file (0 if it does not exist yet)."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def log_lines_since(path, offset):
    """Return the lines appended to a log file since `offset`."""
    if path is None:
        return []
    with Path(path).open("rb") as stream:
        stream.seek(offset)
        return stream.read().decode("utf-8", errors="replace").splitlines()


BATCH_FIELD = re.compile(r"\brequest_id=(\S+) texts=\d+(?: tokens=\d+)? status=\d+(?: code=\S+)? batch=(\d+)\b")


def batch_histogram(lines):
    """Return {requests per batch: number of batches} from the handler's per-request log lines.

    The handler logs one `request_id=... texts=N status=N batch=N` line per request, so a
    batch of n requests leaves n lines with batch=n.
    """
    requests_per_size = {}
    for line in lines:
        match = BATCH_FIELD.search(line)
        if match and match.group(1) != DRAIN_REQUEST_ID:
            size = int(match.group(2))
            requests_per_size[size] = requests_per_size.get(size, 0) + 1
    return {size: math.ceil(count / size) for size, count in sorted(requests_per_size.items())}


def batch_figures(histogram):
    """Return the batch-size histogram with its mean per batch and per request."""
    batches = sum(histogram.values())
    requests = sum(size * count for size, count in histogram.items())
    return {
        "histogram": {str(size): count for size, count in histogram.items()},
        "batches": batches,
        "mean_per_batch": round(requests / batches, 1) if batches else None,
        # What a request sees: the size of the batch it ran in, on average.
        "mean_per_request": round(sum(size * size * n for size, n in histogram.items()) / requests, 1)
        if requests
        else None,
    }


def run_wrk(url, bodies_file, concurrency, duration_s, components=None):
    """Run wrk once (sampling `components` if given) and return (summary, resource usage)."""
    process = start_wrk(url, bodies_file, concurrency, duration_s)
    if not components:
        return wrk_summary(process), {}
    with ResourceSampler({**components, "wrk": [process.pid]}) as sampler:
        summary = wrk_summary(process)
    return summary, sampler.usage


def measure(url, bodies_file, concurrency, rule, components, model_log=None):
    """Warm up, then load `url` as long as `rule` asks while sampling `components`; return the point.

    The warm-up's p50 sets the first duration; if the point's own p50 asks for more, it runs
    again once, longer, up to the rule's cap. A point that still falls short is marked invalid.
    """
    warmup, _ = run_wrk(url, bodies_file, concurrency, rule.warmup_s)
    drain(url, bodies_file)
    duration_s = rule.next_duration_s(
        concurrency, warmup["requests"], warmup["duration_us"] / 1e6, warmup["p50_us"] / 1000
    )
    for attempt in range(2):
        offset = log_size(model_log) if model_log else 0
        summary, usage = run_wrk(url, bodies_file, concurrency, duration_s, components)
        drain(url, bodies_file)
        p50_ms = summary["p50_us"] / 1000
        needed_s = rule.next_duration_s(concurrency, summary["requests"], summary["duration_us"] / 1e6, p50_ms)
        if needed_s <= duration_s or attempt == 1:
            break
        duration_s = needed_s
    seconds = summary["duration_us"] / 1e6
    invalid = rule.invalid_reason(duration_s, p50_ms, summary["requests"])
    point = {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "valid": invalid is None,
        "invalid_reason": invalid,
        "requests": summary["requests"],
        "errors": summary["errors"],
        "errors_by_kind": {
            key.removeprefix("errors_"): value for key, value in summary.items() if key.startswith("errors_") and value
        },
        "requests_per_s": round(summary["requests"] / seconds, 1),
        "p50_ms": p50_ms,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "resources": usage,
    }
    if model_log:
        point["batches"] = batch_figures(batch_histogram(log_lines_since(model_log, offset)))
    return point


def group_usage(pgids):
    """Return (cpu seconds, rss bytes) summed over every live process of the given groups."""
    wanted = set(pgids)
    cpu_ticks = rss_pages = 0
    for pid, _, group in process_table():
        if group not in wanted:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss_pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError):
            continue
        cpu_ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return cpu_ticks / CLOCK_TICKS, rss_pages * PAGE_SIZE


@dataclass
class ResourceSampler:
    """Samples CPU and RSS of named process groups every `interval_s` while running."""

    components: dict  # name -> list of process group IDs
    interval_s: float = 0.5
    peaks: dict = field(default_factory=dict)
    _start: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self):
        self._started_at = time.monotonic()
        self._start = {name: group_usage(pgids)[0] for name, pgids in self.components.items()}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            for name, pgids in self.components.items():
                self.peaks[name] = max(self.peaks.get(name, 0), group_usage(pgids)[1])

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        elapsed = time.monotonic() - self._started_at
        self.usage = {
            name: {
                "cpu_cores": max(0.0, round((group_usage(pgids)[0] - self._start[name]) / elapsed, 2)),
                "peak_rss_mb": round(self.peaks.get(name, group_usage(pgids)[1]) / 1e6, 1),
            }
            for name, pgids in self.components.items()
        }
        return False
