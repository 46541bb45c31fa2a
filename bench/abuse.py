"""Fairness under abuse: heavy clients flood the service with maximum-size requests while a light one is served.

Usage: python -m bench.abuse [--url URL] [--duration 60] [--heavy-clients 3] [--mar ARCHIVE]

Without --url it starts its own stack on free loopback ports (like the soak, bench/soak.py), serving
--mar, else --model-dir (or MODEL_DIR), else the trained stand-in in ../shared, else a tiny
random model. It then:

1. measures, on the idle service, a one-sentence request and a heavy one: the served handler's
   max_request_tokens from GET /info (the most one TorchServe request may cost) in texts at the model's token
   limit, which the facade runs as two of its jobs (docs/overload.md);
2. runs --heavy-clients clients sending that largest request back to back, and one light client
   sending one-sentence requests back to back, for --duration seconds;
3. stops the clients and measures how long until TorchServe's own CPU use drops below 0.2 cores
   (against a --url service, whose processes it cannot see: until a light request is answered
   at its idle latency again): the worker is idle, nothing was left queued or running.

It prints light p50/p99/max and statuses, heavy statuses (count per HTTP status) and latencies,
goodput (texts answered 2xx per second of flood, both kinds of client), the peak RSS and CPU of each
component during the flood (TorchServe's frontend and workers, the facades, nginx; its own stack
only: a --url service's processes are not visible), the idle time, and the bound the light p99
must stay under (see light_p99_bound_s), then ABUSE_JSON {...} and PASS or FAILED; exit status 0
when the light client got no 5xx and its p99 is within the bound, 1 otherwise, 2 when the stack
could not be started.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.load import ResourceSampler, group_usage
from bench.soak import component_groups
from stack.launcher import down, running_groups, up
from stack.models import TEST_MODEL_DIR, build_tiny_model, has_test_model
from stack.private import private_stack, serving_store
from stack.processes import StartupError
from tools.packed import PROJECT_DIR

LIGHT_TEXT = "It is a charming and often affecting journey."
# A word every uncased WordPiece vocabulary of the project's models holds as one token.
WORD = "good"
MODEL_TEXT_TOKENS = 512  # DistilBERT's, MiniLM's and the tiny test model's token limit
CLIENT_TIMEOUT_S = 60.0  # far above every server timeout: a hang shows as a slow answer, not an error


def largest_request(url):
    """Return the body of the heavy request: the served handler's limit per TorchServe request
    (GET /info), in texts at the model's token limit."""
    limits = requests.get(f"{url}/info", timeout=CLIENT_TIMEOUT_S).json()["limits"]
    text_tokens = limits["max_text_tokens"] or MODEL_TEXT_TOKENS
    limit = max(limits["max_request_tokens"] or text_tokens, text_tokens)
    # [CLS] + words + [SEP] per text; whole texts at the limit, then one text with what is left.
    texts = [" ".join([WORD] * (text_tokens - 2))] * (limit // text_tokens)
    if limit % text_tokens > 2:
        texts.append(" ".join([WORD] * (limit % text_tokens - 2)))
    return {"texts": texts}, limit


def timed_post(session, url, body):
    """POST body; return (status, seconds), status 0 when the connection failed or timed out."""
    started = time.monotonic()
    try:
        status = session.post(url, json=body, timeout=CLIENT_TIMEOUT_S).status_code
    except requests.RequestException:
        status = 0
    return status, time.monotonic() - started


def idle_cost(url, body, count):
    """Return the median seconds of `count` requests sent one at a time (after one to warm up)."""
    with requests.Session() as session:
        timed_post(session, url, body)
        answers = [timed_post(session, url, body) for _ in range(count)]
    statuses = {status for status, _ in answers}
    if statuses != {200}:
        raise RuntimeError(f"the idle service answered {sorted(statuses)} to a request within the limits")
    return statistics.median(seconds for _, seconds in answers)


def light_p99_bound_s(largest_s, light_s):
    """Return how long a light request may take at p99 while heavy clients flood the service.

    The facade sends a heavy request as jobs of at most 1,024 tokens, one at a time, and a batch
    holds about one job's worth of tokens, so a light request waits for at most the batch the
    worker is running (less than the heavy request: largest_s), then runs in the next batch,
    next to at most one job (largest_s again), plus its own round trip (light_s). Twice the
    heavy request is the design bound; the third one is room for what the flood itself costs
    (the facades, nginx and the clients on the same cores). Every term is measured in the same
    run, so the bound scales with the CPU.
    """
    return 3 * largest_s + 4 * light_s


def percentile(values, fraction):
    """Return the value at `fraction` (0-1) of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))] if ordered else 0.0


def client_loop(url, body, stop, answers):
    """Send body back to back until stop is set, appending (started, status, seconds) to answers."""
    with requests.Session() as session:
        while not stop.is_set():
            started = time.monotonic()
            status, seconds = timed_post(session, url, body)
            answers.append((started, status, seconds))


def worker_idle_after(pgid, stopped_at, window_s=0.5, idle_cores=0.2, give_up_s=60.0):
    """Return seconds from stopped_at until TorchServe's processes use under idle_cores for a window.

    Their own CPU time (/proc), so other load on the machine does not count; None after give_up_s.
    """

    before = group_usage([pgid])[0]
    while time.monotonic() - stopped_at < give_up_s:
        time.sleep(window_s)
        now = group_usage([pgid])[0]
        if now - before < idle_cores * window_s:
            return time.monotonic() - stopped_at
        before = now
    return None


def light_idle_after(url, light_s, stopped_at, give_up_s=60.0):
    """Return seconds from stopped_at until a light request is answered at its idle latency again."""
    with requests.Session() as session:
        while time.monotonic() - stopped_at < give_up_s:
            status, seconds = timed_post(session, url, {"text": LIGHT_TEXT})
            if status == 200 and seconds <= 2 * light_s + 0.05:
                return time.monotonic() - stopped_at
            time.sleep(0.05)
    return None


def abuse(url, duration_s, heavy_clients=3, torchserve_pgid=None, components=None):
    """Run the measurement against the service at url; return the figures as a dict.

    With torchserve_pgid (TorchServe's process group), the worker counts as idle when
    TorchServe's own CPU use drops; otherwise when a light request is answered at its idle latency.
    With components ({name: [process group IDs]}), their peak RSS and CPU during the flood are measured.
    """
    heavy_body, limit = largest_request(url)
    light_body = {"text": LIGHT_TEXT}
    light_s = idle_cost(url, light_body, 5)
    largest_s = idle_cost(url, heavy_body, 3)
    bound_s = light_p99_bound_s(largest_s, light_s)

    stop_heavy, stop_light = threading.Event(), threading.Event()
    heavy_answers, light_answers = [], []
    heavy = [
        threading.Thread(target=client_loop, args=(url, heavy_body, stop_heavy, heavy_answers), daemon=True)
        for _ in range(heavy_clients)
    ]
    light = threading.Thread(target=client_loop, args=(url, light_body, stop_light, light_answers), daemon=True)
    with ResourceSampler(components or {}) as sampler:
        flood_started = time.monotonic()
        for thread in heavy:
            thread.start()
        time.sleep(min(1.0, duration_s / 10))  # the flood first, then the light client joins it
        light.start()
        time.sleep(duration_s)
        flood_light = list(light_answers)
        stop_heavy.set()
        stopped_at = time.monotonic()
    for thread in heavy:
        thread.join(timeout=CLIENT_TIMEOUT_S + 5)
    stop_light.set()
    light.join(timeout=CLIENT_TIMEOUT_S + 5)
    idle_after_s = (
        worker_idle_after(torchserve_pgid, stopped_at)
        if torchserve_pgid
        else light_idle_after(url, light_s, stopped_at)
    )

    light_seconds = [seconds for _, _, seconds in flood_light]
    heavy_seconds = [seconds for _, _, seconds in heavy_answers]
    served = texts_served(flood_light, 1, stopped_at) + texts_served(
        heavy_answers, len(heavy_body["texts"]), stopped_at
    )
    return {
        "max_request_tokens": limit,
        "heavy_texts": len(heavy_body["texts"]),
        "largest_request_idle_s": round(largest_s, 3),
        "light_request_idle_s": round(light_s, 3),
        "light_p99_bound_s": round(bound_s, 3),
        "light_requests": len(flood_light),
        "light_statuses": count_statuses(flood_light),
        "light_p50_s": round(percentile(light_seconds, 0.50), 3),
        "light_p99_s": round(percentile(light_seconds, 0.99), 3),
        "light_max_s": round(max(light_seconds, default=0.0), 3),
        "heavy_requests": len(heavy_answers),
        "heavy_statuses": count_statuses(heavy_answers),
        "heavy_p99_s": round(percentile(heavy_seconds, 0.99), 3),
        "heavy_max_s": round(max(heavy_seconds, default=0.0), 3),
        "goodput_texts_per_s": round(served / (stopped_at - flood_started), 2),
        "components": sampler.usage,
        "idle_after_s": None if idle_after_s is None else round(idle_after_s, 3),
        "idle_measured_by": "torchserve_cpu" if torchserve_pgid else "light_latency",
    }


def texts_served(answers, texts_per_request, until):
    """Return how many texts (started, status, seconds) answers got back with a 2xx by `until`."""
    return sum(
        texts_per_request for started, status, seconds in answers if 200 <= status < 300 and started + seconds <= until
    )


def count_statuses(answers):
    """Return {status: count} of (started, status, seconds) answers; status 0: no answer."""
    counts = {}
    for _, status, _ in answers:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return dict(sorted(counts.items()))


def failures(figures):
    """Return the failed checks of a run (empty: the light client was served fairly)."""
    found = []
    server_errors = {status: n for status, n in figures["light_statuses"].items() if status >= "500" or status == "0"}
    if server_errors:
        found.append(f"the light client got {server_errors}")
    if not figures["light_requests"]:
        found.append("the light client got no answer during the flood")
    if figures["light_p99_s"] > figures["light_p99_bound_s"]:
        found.append(f"light p99 {figures['light_p99_s']} s is over the bound {figures['light_p99_bound_s']} s")
    unexpected = {s: n for s, n in figures["heavy_statuses"].items() if s not in ("200", "413", "503")}
    if unexpected:
        found.append(f"heavy clients got {unexpected}")
    if figures["idle_after_s"] is None:
        found.append("the worker was not idle within 60 s of the flood's end")
    return found


def report(figures):
    """Print the figures for a person, then as one JSON line."""
    print(
        f"largest request: {figures['heavy_texts']} texts, {figures['max_request_tokens']} tokens, "
        f"{figures['largest_request_idle_s']:.3f} s on the idle service; light request "
        f"{figures['light_request_idle_s']:.3f} s idle"
    )
    print(
        f"light client during the flood: {figures['light_requests']} requests {figures['light_statuses']}, "
        f"p50 {figures['light_p50_s']:.3f} s, p99 {figures['light_p99_s']:.3f} s "
        f"(bound {figures['light_p99_bound_s']:.3f} s), max {figures['light_max_s']:.3f} s"
    )
    print(
        f"heavy clients: {figures['heavy_requests']} requests {figures['heavy_statuses']}, "
        f"p99 {figures['heavy_p99_s']:.3f} s, max {figures['heavy_max_s']:.3f} s"
    )
    print(f"goodput: {figures['goodput_texts_per_s']:.2f} texts/s answered 2xx during the flood")
    for name, usage in figures["components"].items():
        print(f"{name + ':':<12} peak RSS {usage['peak_rss_mb']:.1f} MB, {usage['cpu_cores']:.2f} cores")
    if not figures["components"]:
        print("memory: not measured (a --url service's processes are not visible from here)")
    print(f"idle again {figures['idle_after_s']} s after the heavy clients stopped")
    print("ABUSE_JSON " + json.dumps(figures), flush=True)


def parse_args(argv):
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (e.g. http://127.0.0.1:8080/); default: a private stack")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of flood (60)")
    parser.add_argument("--heavy-clients", type=int, default=3, help="clients sending the largest request (3)")
    parser.add_argument("--mar", type=Path, help="serve this .mar archive (private stack only)")
    parser.add_argument("--model-dir", type=Path, default=os.environ.get("MODEL_DIR") or None, help="build from it")
    return parser.parse_args(argv)


def main(argv=None):
    """Command-line entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.url:
        figures = abuse(args.url, args.duration, args.heavy_clients)
    else:
        (PROJECT_DIR / "run").mkdir(exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="abuse-", dir=PROJECT_DIR / "run"))
        try:
            model_dir = None if args.mar else args.model_dir or test_or_tiny_model(work_dir)
            store, serving = serving_store(work_dir, model_dir, args.mar)
            settings = private_stack(work_dir, store)
            print(f"starting a private stack at {settings.url} serving {serving} (files in {work_dir})", flush=True)
            up(settings)
        except (StartupError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            pgid = running_groups(settings)["torchserve"]
            figures = abuse(
                settings.url,
                args.duration,
                args.heavy_clients,
                torchserve_pgid=pgid,
                components=component_groups(settings),
            )
        finally:
            down(settings, quiet=True)
    report(figures)
    found = failures(figures)
    for failure in found:
        print(f"FAIL: {failure}")
    print("PASS" if not found else "FAILED")
    return 1 if found else 0


def test_or_tiny_model(work_dir):
    """Return the trained test model's dir when ../shared has it, else a tiny random model built now."""
    return TEST_MODEL_DIR if has_test_model() else build_tiny_model(work_dir / "tiny-model")


if __name__ == "__main__":
    sys.exit(main())
