#!/usr/bin/env python3
"""Client for the sentiment service: classify a few sentences and print what came back.

Examples:
  python test_app.py                                  # the seed sentences, http://localhost/
  python test_app.py --url http://127.0.0.1:8080/ --text "What a film" --text "Dull"
  python test_app.py --file reviews.txt               # one text per line, sent in batches

Needs only the Python standard library. Exits 1 if any request fails.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

SEED_TEXTS = [
    "It is worth it",
    "It is a waste of time and money",
    "The acting was wonderful and the story moved me",
    "I would not recommend it to anyone",
]


class ServiceError(RuntimeError):
    """The service could not be reached or answered with an error."""


def post_json(url, body, timeout_s):
    """POST `body` as JSON and return the decoded JSON answer, or raise ServiceError."""
    request = urllib.request.Request(  # noqa: S310 (parse_args allows http(s) URLs only)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the user's URL)
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise ServiceError(f"HTTP {error.code}: {error_message(error)}") from error
    except urllib.error.URLError as error:
        raise ServiceError(f"cannot reach {url}: {error.reason}. Is the service up (`make up`)?") from error
    except (TimeoutError, OSError) as error:
        raise ServiceError(f"no answer from {url} within {timeout_s}s ({error})") from error
    except ValueError as error:
        raise ServiceError(f"{url} did not answer with JSON") from error


def error_message(error):
    """Return the service's own error message from an HTTP error, if it sent one."""
    try:
        detail = json.load(error)["error"]
        return f"{detail['message']} ({detail['code']})"
    except (ValueError, KeyError, TypeError):
        return error.reason


def classify_one(url, text, timeout_s):
    """Return (result, container_id) for one text."""
    answer = post_json(url, {"text": text}, timeout_s)
    return answer, answer.get("container_id", "?")


def classify_batch(url, texts, timeout_s):
    """Return ([result, ...], container_id) for a list of texts, in order."""
    answer = post_json(url, {"texts": texts}, timeout_s)
    return answer["results"], answer.get("container_id", "?")


def result_line(text, result, container_id):
    """Return one printed line: label, score, container ID and the (shortened) text."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    truncated = " (truncated)" if result.get("truncated") else ""
    return f"{result['label']:<8} {result['score']:.4f}  {container_id:<16} {shown}{truncated}"


def batches(texts, size):
    """Yield consecutive slices of `texts` of at most `size` items."""
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def read_lines(path):
    """Return the non-empty lines of a text file (one text per line)."""
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream if line.strip()]


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SENTIMENT_URL", "http://localhost/"))
    parser.add_argument("--text", action="append", help="a text to classify (repeatable)")
    parser.add_argument("--file", help="a file with one text per line, sent in batches")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per request with --file (max 64)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    if not 1 <= args.batch_size <= 64:
        parser.error("--batch-size must be between 1 and 64")
    return args


def main(argv=None):
    """Classify the texts and print one line each; return 1 if anything failed."""
    args = parse_args(argv)
    failures = 0
    texts = list(args.text or [])
    try:
        file_texts = read_lines(args.file) if args.file else []
    except OSError as error:
        print(f"error: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 1
    for text in texts or ([] if file_texts else SEED_TEXTS):
        try:
            result, container_id = classify_one(args.url, text, args.timeout)
            print(result_line(text, result, container_id))
        except ServiceError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
    for chunk in batches(file_texts, args.batch_size):
        try:
            results, container_id = classify_batch(args.url, chunk, args.timeout)
            for text, result in zip(chunk, results, strict=True):
                print(result_line(text, result, container_id))
        except ServiceError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
