"""Request decoding and response shaping for the sentiment handler.

Pure Python on purpose (no torch): TorchServe hands each request body over as a dict,
str, bytes or bytearray depending on its Content-Type, and every rule about what a valid
request is lives here where unit tests can reach it without a model.
"""

import json
from dataclasses import dataclass, field


class InvalidRequestError(ValueError):
    """A request in the batch that cannot be classified; only that request fails."""

    status = 400

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedRequest:
    """The texts of one request and whether the caller sent `text` (one) or `texts` (many)."""

    texts: list
    single: bool


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


def length_sorted_chunks(lengths, max_tokens):
    """Return text indexes grouped into forward passes of similar length.

    Sorting by length before padding means each pass pads to a length close to its
    texts' own, instead of every text to the longest of the whole batch: attention over
    padding is wasted work. A pass holds as many texts as fit in `max_tokens` padded
    tokens (always at least one).
    """
    chunks, current = [], []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        # Sorted ascending, so this text is the longest of the pass it joins.
        if current and (len(current) + 1) * lengths[index] > max_tokens:
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


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
    return text


def parse_request(row):
    """Return the ParsedRequest of one TorchServe request row, or raise InvalidRequestError."""
    body = decode_body(request_body(row))
    has_text, has_texts = "text" in body, "texts" in body
    if has_text and has_texts:
        raise InvalidRequestError("conflicting_fields", 'Send either "text" or "texts", not both.')
    if has_text:
        return ParsedRequest(texts=[checked_text(body["text"])], single=True)
    if not has_texts:
        raise InvalidRequestError("missing_text", 'Send {"text": "..."} or {"texts": ["...", ...]}.')
    texts = body["texts"]
    if not isinstance(texts, list):
        raise InvalidRequestError("invalid_text_type", '"texts" must be a JSON array of strings.')
    if not texts:
        raise InvalidRequestError("missing_text", '"texts" must hold at least one string.')
    return ParsedRequest(texts=[checked_text(text) for text in texts], single=False)


def error_body(error):
    """Return the JSON-ready body TorchServe sends back for a rejected request."""
    return {"error": {"code": error.code, "message": error.message}}


def response_body(request, results):
    """Return the JSON-ready response of one request from its per-text results."""
    if request.single:
        return results[0]
    return {"results": results}
