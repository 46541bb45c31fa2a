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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


# Above every timeout of the system under test (facade 15 s, nginx 30 s, TorchServe's
# responseTimeout 60 s), so a slow answer is measured as slow, or counted as the service's own
# error, never cut short by wrk (whose default, 2 s, is below one request's latency at c=64 on a
# slow CPU).
WRK_TIMEOUT_S = 120
# How long a drain may take: the requests wrk abandoned at the end of a run still run to the end.
DRAIN_TIMEOUT_S = 300
# The drain's probe requests carry this ID, so the logs tell them from the load.
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
    # Status counts on: only 2xx answers count as served (served_and_errors).
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "WRK_STATUS_COUNTS": "1"},
    )


def served_and_errors(summary):
    """Return (2xx answers, errors) of a wrk summary counted with WRK_STATUS_COUNTS=1.

    Errors: every answer that was not 2xx (wrk's own errors_status counts only >= 400) plus
    timeouts and broken connections, which have no answer at all.
    """
    served = summary["status_2xx"]
    no_answer = sum(summary.get(f"errors_{kind}", 0) for kind in ("connect", "read", "write", "timeout"))
    return served, summary["requests"] - served + no_answer


def wrk_summary(process):
    """Wait for wrk and return its summary (requests, 2xx answers, errors, latency percentiles in µs)."""
    output, _ = process.communicate()
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            summary = json.loads(line.removeprefix("WRK_JSON "))
            summary["served"], summary["errors"] = served_and_errors(summary)
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


SAMPLE = re.compile(r"^(?P<name>\w+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
BATCH_METRIC = "sentiment_batch_requests"


def histogram_snapshot(metrics_text, name=BATCH_METRIC, model="sentiment"):
    """Return {"buckets": {le: cumulative count}, "sum": s, "count": n} of one model histogram in Prometheus text."""
    snapshot = {"buckets": {}, "sum": 0.0, "count": 0.0}
    for line in metrics_text.splitlines():
        sample = SAMPLE.match(line)
        if not sample or not sample.group("name").startswith(name + "_"):
            continue
        labels = dict(LABEL.findall(sample.group("labels")))
        if labels.get("ModelName") != model:
            continue
        kind, value = sample.group("name").removeprefix(name + "_"), float(sample.group("value"))
        if kind == "bucket" and "le" in labels:
            snapshot["buckets"][labels["le"]] = value
        elif kind in ("sum", "count"):
            snapshot[kind] = value
    return snapshot


def bucket_label(lower, upper):
    """Return the whole batch sizes a Prometheus bucket (lower, upper] holds, e.g. '3-5', '2', '>10'."""
    if upper == "+Inf":
        return f">{lower:g}"
    low, high = math.floor(lower) + 1, math.floor(float(upper))
    return f"{low}" if low == high else f"{low}-{high}"


def batch_figures(before, after):
    """Return the batches the handler recorded between two snapshots: counts per size range and the mean.

    Requests per batch, from the handler's own histogram (TorchServe's default buckets, so sizes
    come in ranges: 1, 2, 3-5, 6-7, 8-10, >10); the mean is exact (sum / count).
    """
    batches = after["count"] - before["count"]
    histogram, lower, below = {}, 0.0, 0.0
    ordered = sorted(after["buckets"], key=lambda le: math.inf if le == "+Inf" else float(le))
    for le in ordered:
        cumulative = after["buckets"][le] - before["buckets"].get(le, 0.0)
        if cumulative - below > 0:
            histogram[bucket_label(lower, le)] = round(cumulative - below)
        below, lower = cumulative, (math.inf if le == "+Inf" else float(le))
    return {
        "histogram": histogram,
        "batches": round(batches),
        "mean_per_batch": round((after["sum"] - before["sum"]) / batches, 1) if batches > 0 else None,
    }


def batch_snapshot(metrics_url):
    """Return the handler's batch histogram as TorchServe's metrics port serves it now."""
    import requests

    return histogram_snapshot(requests.get(f"{metrics_url}/metrics", timeout=10).text)


def cpu_times():
    """Return the machine's CPU time counters (the `cpu` line of /proc/stat: user nice system idle ... steal ...)."""
    try:
        return [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return []


STEAL_FIELD = 7  # /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice


def steal_share(before, after):
    """Return the share of CPU time the hypervisor gave to other guests between two cpu_times(), or None.

    guest and guest_nice are already counted in user and nice, so they are left out of the total.
    """
    if len(before) <= STEAL_FIELD or len(after) <= STEAL_FIELD:
        return None
    deltas = [a - b for a, b in zip(after[:8], before[:8], strict=True)]
    total = sum(deltas)
    return round(deltas[STEAL_FIELD] / total, 3) if total > 0 else None


def busy_share(before, after):
    """Return the share of all CPU time that was busy (not idle or iowait) between two cpu_times(), or None."""
    if len(before) < 8 or len(after) < 8:
        return None
    deltas = [a - b for a, b in zip(after[:8], before[:8], strict=True)]
    total = sum(deltas)
    return round(1 - (deltas[3] + deltas[4]) / total, 3) if total > 0 else None


def run_wrk(url, bodies_file, concurrency, duration_s, components=None):
    """Run wrk once (sampling `components` if given) and return (summary, resource usage)."""
    process = start_wrk(url, bodies_file, concurrency, duration_s)
    if not components:
        return wrk_summary(process), {}
    with ResourceSampler({**components, "wrk": [process.pid]}) as sampler:
        summary = wrk_summary(process)
    return summary, sampler.usage


def measure(url, bodies_file, concurrency, rule, components, metrics_url=None):
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
        batches_before = batch_snapshot(metrics_url) if metrics_url else None
        cpu_before, load_before = cpu_times(), os.getloadavg()[0]
        summary, usage = run_wrk(url, bodies_file, concurrency, duration_s, components)
        cpu_after = cpu_times()
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
        "served": summary["served"],
        "errors": summary["errors"],
        "errors_by_kind": {
            key.removeprefix("errors_"): value for key, value in summary.items() if key.startswith("errors_") and value
        },
        # 2xx answers only: an error answered fast is not throughput.
        "requests_per_s": round(summary["served"] / seconds, 1),
        "p50_ms": p50_ms,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "resources": usage,
        # The machine during the point: steal (CPU the hypervisor gave other guests), busy share, load.
        "steal_share": steal_share(cpu_before, cpu_after),
        "busy_share": busy_share(cpu_before, cpu_after),
        "load_avg": round(max(load_before, os.getloadavg()[0]), 2),
    }
    if metrics_url:
        # After the drain: the requests wrk abandoned (and the probe) ran in batches the histogram counts too.
        point["batches"] = batch_figures(batches_before, batch_snapshot(metrics_url))
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
