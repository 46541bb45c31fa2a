"""Request decoding and response shaping for the sentiment handler.

Pure Python on purpose (no torch): TorchServe hands each request body over as a dict,
str, bytes or bytearray depending on its Content-Type, and every rule about what a valid
request is lives here where unit tests can reach it without a model.
"""

import json
import math
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from sentiment_truncation import DEFAULT_MODE, MODES

# The header the facade sets on each request: the Unix time (seconds, a decimal) after which it
# no longer waits for the answer. Absolute, because only an absolute time survives TorchServe's
# queue; it assumes the facade's and the worker's clocks agree (one host, or NTP across hosts).
DEADLINE_HEADER = "X-Request-Deadline"
# The facade splits a request into jobs and sets this on each: how many times the job was already
# answered `busy` (and sent again). Its presence says the caller sends a `busy` job again at once;
# a request without it (a direct client of TorchServe) is never answered `busy`.
DEFERRALS_HEADER = "X-Job-Deferrals"
# Sent with the deadline: the seconds the facade had left when it sent the job, and which facade it
# is. Together they let the worker measure each facade's clock against its own (ClockOffsets).
BUDGET_HEADER = "X-Request-Budget"
SENDER_HEADER = "X-Facade-ID"


class InvalidRequestError(ValueError):
    """A request in the batch that cannot be classified; only that request fails."""

    status = 400

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class TooManyTokensError(InvalidRequestError):
    """A request whose texts cost more tokens than one request may."""

    status = 413

    def __init__(self, tokens, limit, max_text_tokens):
        super().__init__(
            "too_many_tokens",
            f"The texts of this request come to {tokens} tokens, over the limit of {limit} tokens per "
            f"request (each text counts at most {max_text_tokens}); split them into at least "
            f"{math.ceil(tokens / limit)} requests.",
        )
        # For the facade, which learns the limits from this answer (its own check comes first).
        self.details = {"tokens": tokens, "max_request_tokens": limit, "max_text_tokens": max_text_tokens}


class TextTooManyTokensError(InvalidRequestError):
    """A text over the model's token limit, under truncation "error"."""

    status = 413

    def __init__(self, index, tokens, max_text_tokens):
        super().__init__(
            "text_too_many_tokens",
            f"Text {index} has {tokens} tokens, over the model's limit of {max_text_tokens} tokens per text "
            '(truncation "error"); shorten it, or choose another truncation: right, left, head_tail or window.',
        )
        self.details = {"index": index, "tokens": tokens, "max_text_tokens": max_text_tokens}


class NotServedError(InvalidRequestError):
    """A valid request the worker answers at once instead of running: too late, or no room in the batch."""

    status = 503


def deadline_passed_error():
    """Return the answer to a request whose caller stopped waiting while it was queued."""
    return NotServedError(
        "deadline_exceeded",
        "The request waited in the queue until it could no longer be answered before its caller stops waiting; "
        "retry shortly.",
    )


def over_budget_error():
    """Return the answer to a job that did not fit into the batch's token budget (the facade sends it again)."""
    return NotServedError("busy", "The batch's token budget went to older requests; send this one again now.")


class DescribeJob:
    """A request that asks who the worker is (sentiment_info.DESCRIBE_HEADER): answered with the
    worker's description, the model not run. Here, not in sentiment_handler.py: TorchServe wants
    exactly one class in the handler's module."""


@dataclass(frozen=True)
class ParsedRequest:
    """The texts of one request and whether the caller sent `text` (one) or `texts` (many)."""

    texts: list
    single: bool
    all_scores: bool = False  # every label's score, not only the best one's
    raw_scores: bool = False  # the logits too (TEI's raw_scores), in label order
    truncation: str = DEFAULT_MODE  # what of a text over the token limit is read (sentiment_truncation.py)
    # Set when a mode split or cut the texts: per part, the index of the text it came from, and
    # per text, whether part of it was left out. Results are put back together per text.
    owners: tuple = ()
    dropped: tuple = ()
    weights: tuple = ()


@dataclass
class Batch:
    """One TorchServe batch on its way through the handler's preprocess, inference, postprocess.

    Kept here because TorchServe requires the handler module to define exactly one class.
    """

    requests: list  # a ParsedRequest or an InvalidRequestError per TorchServe request
    texts: list  # every text of the valid requests, flattened in request order
    chunks: list = field(default_factory=list)  # (text indexes, tokenizer output) per forward pass
    truncated: list = field(default_factory=list)  # per text: was it cut at the token limit
    logits: object = None  # model output (a float32 numpy array), rows in `texts` order
    tokens: list = field(default_factory=list)  # per request: its tokens after truncation (0: not parsed)
    started: float = 0.0  # time.monotonic() when the worker took the batch


# Passes are padded to a multiple of this many tokens: few distinct shapes, since the kernels
# cache per input shape (unbounded variety grew the worker's RSS by 28% in 3 minutes of soak).
PAD_MULTIPLE = 8


def length_sorted_chunks(lengths, max_tokens, multiple=PAD_MULTIPLE):
    """Return text indexes grouped into forward passes of texts that pad to the same length.

    The tokenizer pads a pass to its longest text, rounded up to `multiple`. Only texts whose
    rounded lengths are equal share a pass, so a pass computes no padding beyond that rounding:
    a pass of one 25-token text is already a 32-row matrix product that the CPU runs well, and
    mixing lengths cost more in padding than the larger products gained (docs/performance.md,
    "What was tuned"). A pass holds as many texts as fit in `max_tokens` padded tokens (always at
    least one).
    """
    chunks, current, current_padded = [], [], 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        padded = -(-lengths[index] // multiple) * multiple
        if current and (padded != current_padded or (len(current) + 1) * padded > max_tokens):
            chunks.append(current)
            current = []
        if not current:
            current_padded = padded
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


# What one more ONNX Runtime pass costs beyond its tokens, counted in tokens: its fixed work, about
# 37 tokens' time for the DistilBERT-sized model on 2 cores (docs/performance.md, "Exact lengths").
PASS_COST_TOKENS = 36


def padded_tokens(lengths, chunks, multiple=1):
    """Return the tokens a set of passes computes: each pass's texts padded to its longest, rounded up to `multiple`."""
    return sum(len(chunk) * -(-max(lengths[index] for index in chunk) // multiple) * multiple for chunk in chunks)


def cheapest_runs(lengths, max_tokens, pass_cost):
    """Return text indexes in length order cut into the runs of least total cost, a run costing its
    padded tokens (all at its longest text) plus `pass_cost`, each within `max_tokens` (a text alone always fits)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[index] for index in order]
    # best[j]: least cost of the first j texts in length order; start[j]: where its last run begins.
    best, start = [0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for first in range(end - 1, -1, -1):
            rows = end - first
            if rows > 1 and rows * ordered[end - 1] > max_tokens:
                break
            cost = best[first] + pass_cost + rows * ordered[end - 1]
            if cost <= best[end]:  # on a tie, the longer run: fewer passes
                best[end], start[end] = cost, first
    runs, end = [], len(order)
    while end:
        runs.append(order[start[end] : end])
        end = start[end]
    return runs[::-1]


def exact_length_chunks(lengths, max_tokens, pass_cost=PASS_COST_TOKENS, multiple=PAD_MULTIPLE):
    """Return text indexes grouped into passes padded to their longest text exactly (ONNX Runtime).

    ONNX Runtime's CPU kernels keep no per-shape cache, so rounding a pass up to a multiple of 8
    buys nothing. The texts, in length order, are cut into the runs that cost least: fewer padded
    tokens against more passes (cheapest_runs). A plan that computes more tokens than the
    multiple-of-`multiple` plan (length_sorted_chunks) is made again with half the pass cost; at
    no pass cost every pass holds one length, so the loop ends within that plan's tokens.
    """
    rounded = padded_tokens(lengths, length_sorted_chunks(lengths, max_tokens, multiple), multiple)
    while True:
        chunks = cheapest_runs(lengths, max_tokens, pass_cost)
        if not pass_cost or padded_tokens(lengths, chunks) <= rounded:
            return chunks
        pass_cost //= 2


def deadline_of(value):
    """Return the deadline header's Unix time as a float, or None when absent or not a finite number."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    try:
        deadline = float(value)
    except (TypeError, ValueError):
        return None
    return deadline if math.isfinite(deadline) else None


# Offsets within this are NTP's business (they only shift a deadline by that much).
CLOCK_TOLERANCE_S = 1.0
CLOCK_SAMPLES = 64
CLOCK_SENDERS = 64


class ClockOffsets:
    """Per sender, how far its clock is behind the worker's, learned from the jobs it sent.

    A job sent at the sender's time T = deadline - budget is taken at the worker's time now, so
    now - T = its wait in TorchServe's queue (>= 0) + the offset. The smallest over a sender's
    recent jobs is its offset plus the shortest wait, which is about 0 whenever a job found the
    worker free. A deadline is corrected by that estimate once it exceeds the tolerance; the
    error it leaves is a wait, so a corrected deadline is never earlier than the true one.
    """

    def __init__(self):
        self._samples = OrderedDict()

    def offset_s(self, sender, deadline, budget, now):
        """Record one job's sample; return the sender's offset estimate (0.0 within the tolerance or unknown)."""
        if deadline is None or budget is None:
            return 0.0
        samples = self._samples.pop(sender, None) or deque(maxlen=CLOCK_SAMPLES)
        self._samples[sender] = samples  # most recently heard from last; the oldest sender goes first
        while len(self._samples) > CLOCK_SENDERS:
            self._samples.popitem(last=False)
        samples.append(now - (deadline - budget))
        offset = min(samples)
        return offset if abs(offset) > CLOCK_TOLERANCE_S else 0.0


def deferrals_of(value):
    """Return the deferrals header as a whole number >= 0, or None when absent or unreadable."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


# A batch may go this fraction over its budget (1/8): room for light jobs next to a heavy one.
BUDGET_SLACK = 8


def admission(tokens, deadlines, deferrals, now, limit, max_text_tokens, budget=0, seconds_per_token=0.0):
    """Return, per request, None to run it or the error to answer at once instead.

    `tokens[i]` is request i's cost (None: not a valid request, left alone), `deadlines[i]` the
    Unix time its caller stops waiting (None: no deadline), `deferrals[i]` how often it was
    answered `busy` before (None: its caller does not send it again, so it always runs). A request
    over `limit` is refused (413); one whose deadline has passed is skipped, since nobody would
    read its answer. The others are taken by rank while the batch's total stays within `budget`
    plus an eighth (the first always): most deferrals first (aging: a job gains rank each time it
    is turned back, and the top-ranked job always runs, so none waits forever), then cheapest
    (a light job rides along with a heavy one instead of waiting behind it), then TorchServe's
    arrival order. A batch then costs at most about one budget, which bounds how long any job
    waits behind heavy ones. The rest are answered 503 `busy` at once and sent again by the
    facade. budget 0: no budget. With the worker's recent `seconds_per_token`, a request that
    could not finish before its deadline even in a batch holding only it and the requests taken
    before it is skipped too.
    """
    decisions = [None] * len(tokens)
    candidates = []
    for index, (cost, deadline) in enumerate(zip(tokens, deadlines, strict=True)):
        if cost is None:
            continue
        if limit and cost > limit:
            decisions[index] = TooManyTokensError(cost, limit, max_text_tokens)
        elif deadline is not None and deadline <= now:
            decisions[index] = deadline_passed_error()
        else:
            candidates.append(index)
    total, room = 0, budget + budget // BUDGET_SLACK
    for index in sorted(candidates, key=lambda index: (-_rank(deferrals[index]), tokens[index], index)):
        finish = now + seconds_per_token * (total + tokens[index])
        if deadlines[index] is not None and deadlines[index] <= finish:
            decisions[index] = deadline_passed_error()
        elif budget and total and total + tokens[index] > room and deferrals[index] is not None:
            decisions[index] = over_budget_error()
        else:
            total += tokens[index]
    return decisions


def _rank(deferrals):
    # A request whose caller never sends it again runs now, so it goes first.
    return math.inf if deferrals is None else deferrals


# BERT's pre-tokenizer ends a word at every ASCII whitespace and ASCII punctuation character
# (whatever its options), so the tokens of the text before one of them are the first tokens of
# the whole text: a text can be cut there without changing them. With handle_chinese_chars (the
# default) its normalizer puts spaces around each CJK ideograph too (BERT's _is_chinese_char).
SPLIT_POINT = r" \t\n\r!-/:-@\[-`{-~"
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
SPLIT_POINTS = re.compile(f"[{SPLIT_POINT}]")
SPLIT_POINTS_CJK = re.compile(f"[{SPLIT_POINT}{CJK}]")


def split_point(text, start, pattern=SPLIT_POINTS_CJK):
    """Return the first index >= start where the text can be cut without changing the tokens before it."""
    match = pattern.search(text, start)
    return match.start() if match else len(text)


def token_prefixes(texts, needed, count_tokens, first_chars, pattern=SPLIT_POINTS_CJK):
    """Return, per text, the shortest tried prefix that has at least `needed` tokens (or the whole text).

    The prefixes end at split points, so their tokens are the first tokens of their texts: cut to
    any length up to `needed`, they give the same token ids as the whole text cut to that length,
    and a count of `needed` says the text has at least that many. `count_tokens(list of texts)`
    returns their token counts (special tokens included, no truncation). Each round doubles the
    characters tried for the texts still short of `needed`, so the tokenizer never sees more than
    about twice the characters it takes to reach `needed` tokens, or `first_chars`: a 10,000-
    character text costs what its first few hundred tokens cost, not what all of it would.
    """
    prefixes = list(texts)
    pending = list(range(len(texts)))
    chars = [first_chars] * len(texts)
    while pending:
        ends = {index: split_point(texts[index], chars[index], pattern) for index in pending}
        counts = count_tokens([texts[index][: ends[index]] for index in pending])
        still_short = []
        for index, count in zip(pending, counts, strict=True):
            prefixes[index] = texts[index][: ends[index]]
            if count < needed and ends[index] < len(texts[index]):
                chars[index] = 2 * ends[index] + 1
                still_short.append(index)
        pending = still_short
    return prefixes


def padding_efficiency(lengths, chunks):
    """Return real tokens / tokens processed (padding included) for a set of passes."""
    processed = sum(len(chunk) * max(lengths[index] for index in chunk) for chunk in chunks)
    return sum(lengths) / processed if processed else 1.0


def request_body(row):
    """Return the raw body of one TorchServe request row (`body` for raw posts, `data` for forms)."""
    if not isinstance(row, dict):
        return row
    body = row.get("body")
    return row.get("data") if body is None else body


def decode_body(body):
    """Return the request body as a JSON object (dict), whatever type TorchServe delivered."""
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError("invalid_json", "The body must be UTF-8 encoded JSON.") from exc
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequestError(
                "invalid_json", 'The body must be JSON like {"text": "..."} or {"texts": ["..."]}.'
            ) from exc
    if not isinstance(body, dict):
        raise InvalidRequestError(
            "invalid_json", 'The body must be a JSON object like {"text": "..."} or {"texts": ["..."]}.'
        )
    return body


def checked_text(text):
    """Return `text` if it is a non-empty string the tokenizer can take, else raise."""
    if not isinstance(text, str):
        raise InvalidRequestError("invalid_text_type", "Each text must be a JSON string.")
    if not text.strip():
        raise InvalidRequestError("empty_text", "Texts must contain at least one non-space character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            "invalid_text", "A text contains an unpaired surrogate (such as \\ud800), which is not text."
        ) from None
    return text


def parse_request(row):
    """Return the ParsedRequest of one TorchServe request row, or raise InvalidRequestError.

    The facade's validation (facade/validation.py) is authoritative: it is the public API, and
    for every body both can judge this answers the same code and status (tests/unit/
    test_request_contract.py runs the same bodies through both). Two kinds of check live only
    there: the limits on texts and characters (the facade's settings), and repeated keys and
    NaN/Infinity, which cannot be judged here: TorchServe decodes an application/json body with
    Python's json.loads, which accepts both, before the handler sees the resulting dict.
    """
    body = decode_body(request_body(row))
    has_text, has_texts = "text" in body, "texts" in body
    if has_text and has_texts:
        raise InvalidRequestError("conflicting_fields", 'Send either "text" or "texts", not both.')
    if has_text:
        texts, single = [checked_text(body["text"])], True
    elif not has_texts:
        raise InvalidRequestError("missing_text", 'Send {"text": "..."} or {"texts": ["...", ...]}.')
    else:
        texts, single = checked_texts(body["texts"]), False
    # After the texts, as the facade does (facade/validation.py): a body bad in both ways gets one answer.
    return ParsedRequest(texts=texts, single=single, **request_options(body))


def checked_texts(texts):
    """Return `texts` if it is a non-empty list of texts the tokenizer can take, else raise."""
    if not isinstance(texts, list):
        raise InvalidRequestError("invalid_text_type", '"texts" must be a JSON array of strings.')
    if not texts:
        raise InvalidRequestError("empty_texts", '"texts" is an empty list; send at least one string.')
    return [checked_text(text) for text in texts]


def request_options(body):
    """Return the request's options (all_scores, raw_scores, truncation) with their defaults, or raise naming it."""
    all_scores = body.get("all_scores", False)
    if not isinstance(all_scores, bool):
        raise InvalidRequestError("invalid_option", '"all_scores" must be true or false.')
    raw_scores = body.get("raw_scores", False)
    if not isinstance(raw_scores, bool):
        raise InvalidRequestError("invalid_option", '"raw_scores" must be true or false.')
    truncation = body.get("truncation", DEFAULT_MODE)
    if truncation not in MODES:
        raise InvalidRequestError("invalid_option", f'"truncation" must be one of {", ".join(MODES)}.')
    return {"all_scores": all_scores, "raw_scores": raw_scores, "truncation": truncation}


def error_body(error):
    """Return the JSON-ready body TorchServe sends back for a rejected request."""
    return {"error": {"code": error.code, "message": error.message, **getattr(error, "details", {})}}


def response_body(request, results):
    """Return the JSON-ready response of one request from its per-text results."""
    if request.single:
        return results[0]
    return {"results": results}
