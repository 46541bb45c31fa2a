"""Load generation with wrk and resource sampling of the processes under test."""

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.processes import process_table

POST_SCRIPT = Path(__file__).resolve().parent / "post.lua"
SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"
DEV_TSV = Path(os.environ.get("BENCH_DEV_TSV") or SHARED_DIR / "data" / "sst2" / "dev.tsv")
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


def start_wrk(url, bodies_file, concurrency, duration_s, timeout_s=30):
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
            summary["errors"] = sum(value for key, value in summary.items() if key.startswith("errors_"))
            return summary
    raise RuntimeError(f"wrk failed ({process.returncode}): {output}")


def measure(url, bodies_file, concurrency, duration_s, components, warmup_s=0):
    """Warm up, then load `url` for `duration_s` while sampling `components`; return the point."""
    if warmup_s:
        wrk_summary(start_wrk(url, bodies_file, concurrency, warmup_s))
    process = start_wrk(url, bodies_file, concurrency, duration_s)
    with ResourceSampler({**components, "wrk": [process.pid]}) as sampler:
        summary = wrk_summary(process)
    seconds = summary["duration_us"] / 1e6
    return {
        "concurrency": concurrency,
        "requests": summary["requests"],
        "errors": summary["errors"],
        "requests_per_s": round(summary["requests"] / seconds, 1),
        "p50_ms": summary["p50_us"] / 1000,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "resources": sampler.usage,
    }


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
                "cpu_cores": round((group_usage(pgids)[0] - self._start[name]) / elapsed, 2),
                "peak_rss_mb": round(self.peaks.get(name, group_usage(pgids)[1]) / 1e6, 1),
            }
            for name, pgids in self.components.items()
        }
        return False
