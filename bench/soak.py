"""Soak test: sustained load through nginx on a private native stack, with memory sampled.

Usage: python -m bench.soak [--duration 300] [--concurrency 64] [--sample-interval 10] ...

It starts its own stack (TorchServe, 2 facades, nginx) on free loopback ports under
run/soak-*, warms it up, then keeps --concurrency requests in flight with wrk (closed loop,
single-text POST / bodies) for --duration seconds while it samples the resident memory (RSS)
of every process of each component every --sample-interval seconds. It prints the samples as
a table, the latency percentiles and the answers by status, then checks:

  - no 5xx other than 503 (deliberate shedding: TorchServe's queue full), and no socket
    errors or timeouts;
  - no component's RSS grows by more than --max-growth (10%) over the last half of the run: the
    largest sample of the last half against the first one of it. Memory that is still filling
    caches (oneDNN kernels, allocator arenas) in the first minutes is not a leak; what counts is
    whether it has levelled off, and a leak shows in any half of a run on any CPU. The slope of
    a least-squares line through the last half's samples (MB/min) is reported too.

Exit status: 0 all checks passed, 1 a check failed, 2 the stack could not be started.

What it serves: --mar (an archive), else --model-dir (or MODEL_DIR), else a DistilBERT-sized
random model (stack/timing_model.py: it costs what DistilBERT SST-2 costs) built with the
stand-in's vocabulary from ../shared, else a tiny random model built on the spot (plumbing
only: its latencies say nothing about a real model).

Every RSS sample is also written to rss.csv in the run's directory (kept with --keep).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.load import group_usage, labelled_sentences, start_wrk, write_bodies, wrk_summary
from stack.launcher import down, running_groups, up
from stack.models import TEST_MODEL_DIR, build_tiny_model, timing_model
from stack.private import private_stack, serving_store
from stack.processes import StartupError

PROJECT_DIR = Path(__file__).resolve().parent.parent
COMPONENTS = ("torchserve", "facades", "nginx")


def parse_args(argv):
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load after the warm-up (300)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests kept in flight (64)")
    parser.add_argument("--sample-interval", type=float, default=10.0, help="seconds between RSS samples (10)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds of load before the first sample (duration/10, 10 to 30)"
    )
    parser.add_argument(
        "--max-growth", type=float, default=0.10, help="allowed RSS growth over the last half of the run (0.10)"
    )
    parser.add_argument("--mar", type=Path, help="serve this .mar archive")
    parser.add_argument("--model-dir", type=Path, default=os.environ.get("MODEL_DIR") or None, help="build from it")
    parser.add_argument("--keep", action="store_true", help="keep run/soak-* (logs) even when every check passes")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1 or args.sample_interval <= 0:
        parser.error("--duration, --concurrency and --sample-interval must be above 0")
    if args.warmup is None:
        args.warmup = min(30.0, max(10.0, args.duration / 10))
    return args


def serving_model_dir(args, work_dir):
    """Return the model dir to serve: --model-dir, else the timing model, else a tiny one built now."""
    if args.model_dir is not None:
        return args.model_dir
    if (TEST_MODEL_DIR / "vocab.txt").is_file():
        return timing_model()
    return build_tiny_model(work_dir / "tiny-model")


def component_groups(settings):
    """Return {component: [process group IDs]} of the running stack."""
    groups = running_groups(settings)
    return {
        "torchserve": [groups["torchserve"]],
        "facades": [pgid for name, pgid in groups.items() if name.startswith("facade-")],
        "nginx": [groups["nginx"]],
    }


def rss_mb(pgids):
    """Return the summed RSS of every live process of the groups, in MB."""
    return group_usage(pgids)[1] / 1e6


class RssSampler:
    """Samples each component's RSS every interval_s (the first sample at once) until stopped."""

    def __init__(self, components, interval_s, started_at, csv_path=None):
        self.components = components
        self.csv_path = csv_path
        self.interval_s = interval_s
        self.started_at = started_at
        self.samples = []  # (seconds since started_at, {component: MB})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def append(self, seconds, sample):
        """Keep one sample, and write it to the CSV file as it comes (a long run can be read live)."""
        self.samples.append((seconds, sample))
        if self.csv_path is not None:
            with self.csv_path.open("a", encoding="utf-8") as out:
                if out.tell() == 0:
                    out.write("t_s," + ",".join(f"{name}_mb" for name in COMPONENTS) + "\n")
                out.write(f"{seconds:.1f}," + ",".join(f"{sample[name]:.1f}" for name in COMPONENTS) + "\n")

    def _run(self):
        while True:
            sample = {name: rss_mb(pgids) for name, pgids in self.components.items()}
            self.append(time.monotonic() - self.started_at, sample)
            print(row(self.samples[-1][0], sample), flush=True)
            if self._stop.wait(self.interval_s):
                return


def row(seconds, sample):
    """Return one line of the RSS table."""
    return f"{seconds:>7.1f}  " + "  ".join(f"{sample[name]:>12.1f}" for name in COMPONENTS)


def last_half(samples):
    """Return the samples taken in the last half of the run (at least two when there are two)."""
    middle = samples[-1][0] / 2
    half = [(seconds, sample) for seconds, sample in samples if seconds >= middle]
    return half if len(half) >= 2 else samples[-2:]


def growth(samples):
    """Return {component: relative growth over the last half: its largest sample over its first}."""
    half = last_half(samples)
    first = half[0][1]
    later = [sample for _, sample in half[1:]] or [first]
    return {name: max(sample[name] for sample in later) / first[name] - 1 for name in COMPONENTS}


def slope_mb_per_min(samples):
    """Return {component: least-squares slope of RSS over the last half of the run, MB/min}."""
    half = last_half(samples)
    times = [seconds / 60 for seconds, _ in half]
    mean_t = sum(times) / len(times)
    spread = sum((t - mean_t) ** 2 for t in times) or 1.0
    slopes = {}
    for name in COMPONENTS:
        values = [sample[name] for _, sample in half]
        mean_v = sum(values) / len(values)
        slopes[name] = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    return slopes


def verdict(summary, growths, max_growth):
    """Return the list of failed checks (empty: the soak passed)."""
    failures = []
    if summary["status_5xx_other"]:
        failures.append(f"{summary['status_5xx_other']} answers were 5xx other than 503")
    if summary["status_4xx"] or summary["status_other"]:
        failures.append(f"{summary['status_4xx'] + summary['status_other']} answers were neither 2xx nor 5xx")
    sockets = {key: summary[key] for key in ("errors_connect", "errors_read", "errors_write", "errors_timeout")}
    if any(sockets.values()):
        failures.append(f"socket errors or timeouts: {sockets}")
    if summary["status_2xx"] == 0:
        failures.append("no request succeeded")
    for name, value in growths.items():
        if value > max_growth:
            failures.append(f"{name} RSS grew {value:.1%} over the last half of the run (limit {max_growth:.0%})")
    return failures


def load(url, bodies, concurrency, duration_s):
    """Run wrk (it counts answers by status class) and return its summary."""
    timeout_s = 30  # above nginx's proxy_read_timeout: a hang shows up as an nginx 504 first
    return wrk_summary(start_wrk(url, bodies, concurrency, duration_s, timeout_s=timeout_s))


def soak(args, settings, bodies, csv_path=None):
    """Warm up and run the soak against a started stack; return (summary, samples)."""
    components = component_groups(settings)
    print(f"warm-up: {args.warmup:.0f} s at concurrency {args.concurrency}", flush=True)
    load(settings.url, bodies, args.concurrency, max(1, round(args.warmup)))
    print(f"\nsoak: {args.duration:.0f} s at concurrency {args.concurrency}; RSS (MB) every {args.sample_interval:g} s")
    print(f"{'t (s)':>7}  " + "  ".join(f"{name:>12}" for name in COMPONENTS), flush=True)
    with RssSampler(components, args.sample_interval, time.monotonic(), csv_path) as sampler:
        summary = load(settings.url, bodies, args.concurrency, max(1, round(args.duration)))
    # One more sample right after the load: the memory it left behind.
    last = {name: rss_mb(pgids) for name, pgids in components.items()}
    sampler.append(time.monotonic() - sampler.started_at, last)
    print(row(sampler.samples[-1][0], last) + "  (end)", flush=True)
    return summary, sampler.samples


def report(summary, samples, growths):
    """Print the latency, status and growth summary; return it as a dict."""
    seconds = summary["duration_us"] / 1e6
    result = {
        "requests": summary["requests"],
        "requests_per_s": round(summary["requests"] / seconds, 1),
        "p50_ms": summary["p50_us"] / 1000,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "max_ms": summary["max_us"] / 1000,
        "statuses": {key.removeprefix("status_"): summary[key] for key in summary if key.startswith("status_")},
        "socket_errors": sum(summary[key] for key in ("errors_connect", "errors_read", "errors_write")),
        "timeouts": summary["errors_timeout"],
        "rss_mb_first": {name: round(samples[0][1][name], 1) for name in COMPONENTS},
        "rss_mb_max_later": {name: round(max(s[name] for _, s in samples[1:] or samples), 1) for name in COMPONENTS},
        "rss_growth": {name: round(value, 4) for name, value in growths.items()},
        "rss_growth_whole_run": {
            name: round(max(s[name] for _, s in samples) / samples[0][1][name] - 1, 4) for name in COMPONENTS
        },
        "rss_slope_mb_per_min_last_half": {name: round(value, 3) for name, value in slope_mb_per_min(samples).items()},
    }
    print(
        f"\nrequests: {result['requests']} in {seconds:.1f} s ({result['requests_per_s']}/s); "
        f"latency p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms"
    )
    print(
        f"answers by status: {result['statuses']}; "
        f"socket errors {result['socket_errors']}, timeouts {result['timeouts']}"
    )
    print(
        "RSS over the last half of the run: "
        + ", ".join(
            f"{name} {value:+.1%} ({result['rss_slope_mb_per_min_last_half'][name]:+.3f} MB/min)"
            for name, value in growths.items()
        )
    )
    print("SOAK_JSON " + json.dumps(result), flush=True)
    return result


def main(argv=None):
    """Command-line entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    (PROJECT_DIR / "run").mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="soak-", dir=PROJECT_DIR / "run"))
    failures = ["the soak did not finish"]
    try:
        model_dir = None if args.mar else serving_model_dir(args, work_dir)
        store, serving = serving_store(work_dir, model_dir, args.mar)
        settings = private_stack(work_dir, store)
        bodies = write_bodies([text for text, _ in labelled_sentences()], work_dir / "bodies.txt")
        print(f"starting a private stack at {settings.url} serving {serving} (files in {work_dir})", flush=True)
        started = time.monotonic()
        up(settings)
        print(f"ready after {time.monotonic() - started:.1f} s", flush=True)
    except (StartupError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"RSS samples: {work_dir / 'rss.csv'}", flush=True)
        summary, samples = soak(args, settings, bodies, work_dir / "rss.csv")
        growths = growth(samples)
        report(summary, samples, growths)
        failures = verdict(summary, growths, args.max_growth)
    finally:
        down(settings, quiet=True)
        if failures or args.keep:
            print(f"logs kept in {work_dir / 'logs'}")
        elif work_dir.parent == PROJECT_DIR / "run" and work_dir.name.startswith("soak-"):
            shutil.rmtree(work_dir)  # made by mkdtemp above
    for failure in failures:
        print(f"FAIL: {failure}")
    print("PASS" if not failures else "FAILED")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
