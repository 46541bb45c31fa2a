#!/usr/bin/env python3
"""Client for the sentiment service: classify a few sentences and print what came back.

Examples:
  python test_app.py                                  # the seed sentences, http://127.0.0.1:8080/
  python test_app.py --url http://10.0.0.5:8080/ --text "What a film" --text "Dull"
  python test_app.py --file reviews.txt               # one text per line, sent in batches
  python test_app.py --json --text "What a film"      # one JSON object per text
  python test_app.py --requests 200 --concurrency 8   # a quick smoke load, with a summary

Answers that say what to do are followed (not in the smoke load, which shows them as they come):
429 or 503 with Retry-After is retried after that wait (--retries, --max-wait), and 413
too_many_tokens for many texts is split into as many requests as the answer says.

Needs only the Python standard library. Exit status: 0 all classified, 1 a request failed,
2 bad arguments or unreadable --file, 3 the service could not be reached.
"""

import argparse
import email.utils
import http.client
import itertools
import json
import math
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Where `make up`, Compose and Swarm publish nginx unless HTTP_PORT says otherwise.
DEFAULT_URL = "http://127.0.0.1:8080/"
# The service's truncation modes (GET /info lists them) and the result fields its options add.
TRUNCATION_MODES = ("right", "left", "head_tail", "error", "window")
OPTIONAL_FIELDS = ("windows", "scores")

SEED_TEXTS = [
    "It is worth it",
    "It is a waste of time and money",
    "The acting was wonderful and the story moved me",
    "I would not recommend it to anyone",
]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class ServiceError(RuntimeError):
    """A request failed: the service answered an error, or no usable answer came back."""

    def __init__(self, message, code="error", status=None, container_id=None, request_id=None, **advice):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.container_id = container_id
        self.request_id = request_id
        # What the answer says to do: wait Retry-After seconds, or split into that many requests.
        self.retry_after_s = advice.get("retry_after_s")
        self.split_into = advice.get("split_into")


class Unreachable(ServiceError):
    """The service could not be reached at all (refused, unknown host, no route): stop."""

    def __init__(self, message):
        super().__init__(message, code="unreachable")


@dataclass
class Outcome:
    """What one request for some texts brought back: one result per text, or an error."""

    texts: list
    results: list = field(default_factory=list)
    container_id: str = "?"
    request_id: str = ""
    error: ServiceError | None = None
    seconds: float = 0.0


def post_json(url, body, timeout_s, api_key=None):
    """POST `body` as JSON (with the API key, if any); return (decoded JSON answer, response headers), or raise."""
    request = urllib.request.Request(  # noqa: S310 (parse_args allows http(s) URLs only)
        url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the user's URL)
            raw = response.read()
            headers = response.headers
    except urllib.error.HTTPError as error:
        raise http_error(url, error) from error
    except urllib.error.URLError as error:
        raise connection_error(url, error.reason, timeout_s) from error
    except (TimeoutError, OSError, http.client.HTTPException) as error:
        raise connection_error(url, error, timeout_s) from error
    try:
        return json.loads(raw), headers
    except ValueError:
        raise ServiceError(
            f"{url} answered 200 but not with JSON; is --url the sentiment service?",
            code="not_json",
            status=200,
            request_id=headers.get("X-Request-ID", ""),
        ) from None


def connection_error(url, reason, timeout_s):
    """Return the error for a request that got no HTTP answer, with what to check."""
    if isinstance(reason, TimeoutError):
        return ServiceError(
            f"no answer from {url} within {timeout_s:g} s; the service may be overloaded or stuck: "
            "retry, raise --timeout, or check its logs (`make logs`)",
            code="timeout",
        )
    if isinstance(reason, ConnectionRefusedError):
        return Unreachable(
            f"cannot connect to {url}: connection refused. Is the service running (`make up`), "
            "and are the host and port in --url (or SENTIMENT_URL) right?"
        )
    if isinstance(reason, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname
        return Unreachable(f"cannot connect to {url}: host {host!r} not found. Check the host name in --url.")
    if isinstance(reason, ConnectionResetError | http.client.RemoteDisconnected | http.client.HTTPException):
        return ServiceError(f"{url} closed the connection without an answer ({reason}); retry", code="disconnected")
    return Unreachable(f"cannot connect to {url}: {reason}. Is the service running, and is --url right?")


def http_error(url, error):
    """Return the error for an HTTP error answer, with the service's own code and message when it sent them."""
    container_id = error.headers.get("X-Container-ID") if error.headers else None
    request_id = error.headers.get("X-Request-ID", "") if error.headers else ""
    detail = {}
    try:
        detail = json.load(error)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError, OSError):
        code = f"http_{error.code}"
        message = f"{error.reason} (not the service's JSON error; is --url the sentiment service?)"
    return ServiceError(
        f"HTTP {error.code} {code}: {message}",
        code=code,
        status=error.code,
        container_id=container_id,
        request_id=request_id,
        retry_after_s=retry_after_s(error.headers.get("Retry-After") if error.headers else None),
        split_into=split_into(detail, message) if error.code == 413 and code == "too_many_tokens" else None,
    )


def retry_after_s(value):
    """Return the seconds a Retry-After header asks to wait (seconds or an HTTP date), or None."""
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def split_into(detail, message):
    """Return how many requests a 413 too_many_tokens answer says to split into (at least 2)."""
    tokens, limit = detail.get("tokens"), detail.get("max_request_tokens")
    if isinstance(tokens, int) and isinstance(limit, int) and limit > 0:
        return max(2, math.ceil(tokens / limit))
    stated = re.search(r"split them into at least (\d+)", message)
    return max(2, int(stated.group(1))) if stated else 2


def classify(url, texts, timeout_s, single, options=None, api_key=None):
    """Send texts (as {"text"} when `single`, else {"texts"}) with `options` and return an Outcome; never raises."""
    started = time.perf_counter()
    outcome = Outcome(texts=list(texts))
    try:
        body = {"text": texts[0]} if single else {"texts": list(texts)}
        answer, headers = post_json(url, {**body, **(options or {})}, timeout_s, api_key)
        results = [answer] if single else answer.get("results")
        if not isinstance(results, list) or len(results) != len(texts):
            raise ServiceError(f"{url} answered with JSON that is not a classification", code="unexpected_answer")
        if not all(isinstance(r, dict) and "label" in r and "score" in r for r in results):
            raise ServiceError(f"{url} answered with a result that lacks a label or a score", code="unexpected_answer")
        outcome.results = [
            {"label": r["label"], "score": r["score"], **({"truncated": True} if r.get("truncated") else {})}
            | {key: r[key] for key in OPTIONAL_FIELDS if key in r}
            for r in results
        ]
        outcome.container_id = str(answer.get("container_id", "?"))
        outcome.request_id = headers.get("X-Request-ID", "")
    except ServiceError as error:
        outcome.error = error
        outcome.container_id = error.container_id or "?"
        outcome.request_id = error.request_id or ""
    outcome.seconds = time.perf_counter() - started
    return outcome


def classify_patiently(args, texts, single):
    """Classify texts like classify(), following what an error answer says to do; return [Outcome].

    429/503 with Retry-After: wait that long (at most --max-wait s) and retry, --retries times.
    413 too_many_tokens for many texts: split them into as many requests as the answer says, each
    classified the same way (one Outcome per part, in input order). A single text is reported.
    """
    outcome = classify(args.url, texts, args.timeout, single, request_options(args), args.api_key)
    for attempt in range(1, args.retries + 1):
        error = outcome.error
        if error is None or error.status not in (429, 503) or error.retry_after_s is None:
            break
        wait_s = min(error.retry_after_s, args.max_wait)
        note(f"HTTP {error.status} {error.code}: retry {attempt} of {args.retries} in {wait_s:g} s (Retry-After)")
        time.sleep(wait_s)
        outcome = classify(args.url, texts, args.timeout, single, request_options(args), args.api_key)
    error = outcome.error
    if error is None or error.split_into is None or len(texts) < 2:
        return [outcome]
    parts = min(error.split_into, len(texts))
    note(f"HTTP 413 {error.code}: splitting {len(texts)} texts into {parts} requests, as the answer says")
    size = math.ceil(len(texts) / parts)
    return [part for chunk in batches(texts, size) for part in classify_patiently(args, chunk, False)]


def note(message):
    """Print what the client does about an answer on stderr (results stay on stdout)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def result_line(text, result, container_id):
    """Return one printed line: label, score, container ID and the (shortened) text."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    truncated = " (truncated)" if result.get("truncated") else ""
    windows = f" ({result['windows']} windows)" if "windows" in result else ""
    scores = "".join(f" {entry['label']}={entry['score']:.4f}" for entry in result.get("scores", ()))
    return f"{result['label']:<8} {result['score']:.4f}  {container_id:<16} {shown}{truncated}{windows}{scores}"


def request_options(args):
    """Return the classify options the command line asked for (none: the service's defaults)."""
    options = {"all_scores": True} if args.all_scores else {}
    return {**options, "truncation": args.truncation} if args.truncation else options


def json_lines(outcome):
    """Return one JSON object (as a line) per text of an outcome: its result, or the request's error."""
    lines = []
    for index, text in enumerate(outcome.texts):
        if outcome.error is None:
            item = {"text": text, **outcome.results[index], "container_id": outcome.container_id}
        else:
            error = outcome.error
            item = {"text": text, "error": {"status": error.status, "code": error.code, "message": error.message}}
            if error.container_id:
                item["container_id"] = error.container_id
        if outcome.request_id:
            item["request_id"] = outcome.request_id
        lines.append(json.dumps(item, ensure_ascii=False))
    return lines


class Progress:
    """A text progress bar on stderr, drawn only when stderr is a terminal."""

    WIDTH = 30

    def __init__(self, total, unit, stream=None, enabled=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.unit, self.done = max(total, 1), unit, 0
        self._drawn_at = 0.0

    def advance(self, count):
        """Count `count` more items done and redraw (at most ten times a second, and at the end)."""
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at >= 0.1 or self.done >= self.total):
            self._drawn_at = now
            self.draw()

    def draw(self):
        if not self.enabled:
            return
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        percent = 100 * self.done // self.total
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.unit} {percent:3d}%")
        self.stream.flush()

    def clear(self):
        """Erase the bar so that a printed line does not run into it."""
        if self.enabled:
            self.stream.write("\r" + " " * (self.WIDTH + 40) + "\r")
            self.stream.flush()

    def finish(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def batches(texts, size):
    """Yield consecutive slices of `texts` of at most `size` items."""
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def read_lines(path):
    """Return the non-empty lines of a text file (one text per line)."""
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream if line.strip()]


def run_texts(args, texts, file_texts):
    """Classify every text once and print a line (or JSON object) per text, in input order."""
    jobs = [([text], True) for text in texts] + [(chunk, False) for chunk in batches(file_texts, args.batch_size)]
    progress = Progress(len(file_texts), "texts", enabled=None if file_texts else False)
    stop = threading.Event()

    def send(job):
        if stop.is_set():
            return None
        outcomes = classify_patiently(args, *job)
        if any(isinstance(outcome.error, Unreachable) for outcome in outcomes):
            stop.set()
        return outcomes

    # Printed lines and the bar share the screen only when stdout is a terminal too.
    shared_screen = progress.enabled and sys.stdout.isatty()
    status = EXIT_OK
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for (_, single), outcomes in zip(jobs, pool.map(send, jobs), strict=True):
            for outcome in outcomes or []:  # None: not sent, the service was already found unreachable
                if shared_screen:
                    progress.clear()
                status = max(status, report(args, outcome))
                if not single:  # the bar counts the file's texts
                    progress.advance(len(outcome.texts))
                if shared_screen:
                    progress.draw()
    progress.finish()
    return status


def report(args, outcome):
    """Print one outcome; return the exit status it calls for."""
    if args.json:
        for line in json_lines(outcome):
            print(line, flush=True)
    elif outcome.error is None:
        for text, result in zip(outcome.texts, outcome.results, strict=True):
            print(result_line(text, result, outcome.container_id), flush=True)
    if outcome.error is None:
        return EXIT_OK
    if isinstance(outcome.error, Unreachable):
        print(f"error: {outcome.error.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    which = repr(outcome.texts[0][:40]) + (f" and {len(outcome.texts) - 1} more" if len(outcome.texts) > 1 else "")
    print(f"error: {outcome.error.message} (for {which})", file=sys.stderr)
    return EXIT_FAILED


def percentile(sorted_values, fraction):
    """Return the nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def run_load(args, texts):
    """Send --requests single-text requests, --concurrency at a time, and print a summary."""
    pool_texts = itertools.cycle(texts)
    work = [next(pool_texts) for _ in range(args.requests)]
    progress = Progress(args.requests, "requests")
    stop = threading.Event()
    lock = threading.Lock()
    outcomes = []

    def send(text):
        if stop.is_set():
            return
        outcome = classify(args.url, [text], args.timeout, single=True, api_key=args.api_key)
        if isinstance(outcome.error, Unreachable):
            stop.set()
        with lock:
            outcomes.append(outcome)
            progress.advance(1)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(send, work))
    elapsed = time.perf_counter() - started
    progress.finish()

    unreachable = [o for o in outcomes if isinstance(o.error, Unreachable)]
    answered = [o for o in outcomes if not isinstance(o.error, Unreachable)]
    latencies = sorted(o.seconds * 1000 for o in answered)
    errors = Counter(o.error.code for o in outcomes if o.error is not None)
    containers = Counter(o.container_id for o in answered if o.error is None)
    summary = {
        "url": args.url,
        "requests": len(outcomes),
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(answered) / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p95": round(percentile(latencies, 0.95), 1),
            "max": round(latencies[-1], 1) if latencies else 0.0,
        },
        "errors": sum(errors.values()),
        "errors_by_code": dict(errors),
        "container_ids": dict(sorted(containers.items())),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(load_summary(summary))
    if unreachable:
        print(f"error: {unreachable[0].error.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_FAILED if errors else EXIT_OK


def load_summary(summary):
    """Return the smoke load's summary as a few lines of text."""
    latency = summary["latency_ms"]
    errors = ", ".join(f"{code} x{count}" for code, count in summary["errors_by_code"].items())
    containers = ", ".join(f"{cid} x{count}" for cid, count in summary["container_ids"].items()) or "none"
    return "\n".join(
        [
            f"requests:      {summary['requests']} to {summary['url']}, {summary['concurrency']} at a time, "
            f"in {summary['seconds']:.2f} s",
            f"throughput:    {summary['requests_per_s']:.1f} requests/s",
            f"latency:       p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, max {latency['max']:.1f} ms",
            f"errors:        {summary['errors']}" + (f" ({errors})" if errors else ""),
            f"container IDs: {len(summary['container_ids'])} ({containers})",
        ]
    )


def positive_int(value):
    """argparse type: a whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return number


def positive_float(value):
    """argparse type: a number of seconds above 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"{value} is not above 0")
    return number


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all classified, 1 a request failed, 2 bad arguments, 3 service unreachable.",
    )
    parser.add_argument("--url", default=os.environ.get("SENTIMENT_URL", DEFAULT_URL))
    parser.add_argument("--text", action="append", help="a text to classify (repeatable)")
    parser.add_argument("--file", help="a file with one text per line, sent in batches (progress bar on a terminal)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per request with --file (max 64)")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for each answer")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text (or the load summary)")
    parser.add_argument("--all-scores", action="store_true", help="also print every label's score")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SENTIMENT_API_KEY") or None,
        help="sent as Authorization: Bearer when the service needs keys (default: $SENTIMENT_API_KEY)",
    )
    parser.add_argument(
        "--truncation",
        choices=TRUNCATION_MODES,
        help="what of a text over the model's token limit is read (default: the service's; see GET /info)",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="retries of a 429/503 that has Retry-After (0: none); default 3"
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=10.0,
        help="longest wait before a retry (s), whatever Retry-After says; default 10",
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=1, help="requests in flight at once (threads); default 1"
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        help="smoke load: send this many single-text requests (cycling through the texts) and print a summary",
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    if not 1 <= args.batch_size <= 64:
        parser.error("--batch-size must be between 1 and 64")
    if args.retries < 0 or not 0 <= args.max_wait <= 3600:
        parser.error("--retries must be 0 or more, --max-wait between 0 and 3600 seconds")
    return args


def main(argv=None):
    """Classify the texts and print one line each (or a load summary); return the exit status."""
    args = parse_args(argv)
    texts = list(args.text or [])
    try:
        file_texts = read_lines(args.file) if args.file else []
    except OSError as error:
        print(f"error: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except UnicodeDecodeError:
        print(f"error: cannot read {args.file}: it is not UTF-8 text", file=sys.stderr)
        return EXIT_USAGE
    if args.requests:
        return run_load(args, texts + file_texts or SEED_TEXTS)
    return run_texts(args, texts or ([] if file_texts else SEED_TEXTS), file_texts)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
