"""TorchServe handler: a Hugging Face sequence classifier with dynamic batching.

TorchServe groups up to `batchSize` requests into one call of `handle`. Every text of
every valid request goes through one tokenizer call and one forward pass; the results
are split back per request, in order. A malformed request gets its own 4xx while the
rest of the batch still succeeds.

The model runs on ONNX Runtime (the CPU default) or torch (GPU, bf16, or by choice), as
model-config.yaml's handler.runtime says (sentiment_runtime.py). Before TorchServe marks the
worker READY, `initialize` runs the model over the pass shapes traffic will bring (warm-up).
"""

import dataclasses
import json
import logging
import time

import numpy as np
from transformers import AutoTokenizer
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from sentiment_config import handler_options
from sentiment_info import DESCRIBE_HEADER, MODEL_VERSION_HEADER, model_identity, trace_id_of
from sentiment_requests import (
    BUDGET_HEADER,
    CLOCK_SENDERS,
    DEADLINE_HEADER,
    DEFERRALS_HEADER,
    PAD_MULTIPLE,
    SENDER_HEADER,
    SPLIT_POINTS,
    SPLIT_POINTS_CJK,
    Batch,
    ClockOffsets,
    DescribeJob,
    InvalidRequestError,
    ParsedRequest,
    TextTooManyTokensError,
    admission,
    deadline_of,
    deferrals_of,
    error_body,
    exact_length_chunks,
    length_sorted_chunks,
    padding_efficiency,
    parse_request,
    response_body,
    token_prefixes,
)
from sentiment_runtime import loaded_model, softmax, warm_up, warmup_shapes
from sentiment_truncation import MAX_WINDOWS, averaged, cut, text_result

logger = logging.getLogger(__name__)

# The worker's speed, for deadlines, smoothed over about the last five batches. Every batch teaches
# it, counted as at least this many tokens, so that a small batch (where the fixed cost per batch
# dominates) does not read as slow per token: after one slow batch, the light traffic that follows
# brings the estimate back by itself (it once locked in: only large batches taught it).
SPEED_MIN_TOKENS = 256
SPEED_WEIGHT = 0.2
# Characters of each text tokenized first, per token wanted: enough for most prose at once
# (English averages under 5 characters a token); a text short of tokens is tried again with twice
# as many characters.
CHARS_PER_TOKEN = 4

# Declared in torchserve-metrics.yaml (TorchServe's prometheus mode drops undeclared metrics).
BATCH_TEXTS_METRIC = "sentiment_batch_texts"
BATCH_REQUESTS_METRIC = "sentiment_batch_requests"


def decoded(data):
    """Return each request of a batch parsed (a ParsedRequest), or the InvalidRequestError that answers it."""
    requests = []
    for row in data:
        try:
            requests.append(parse_request(row))
        except InvalidRequestError as error:
            requests.append(error)
    return requests


def split_points(tokenizer):
    """Return where texts may be cut for this tokenizer (sentiment_requests.SPLIT_POINTS), None: nowhere."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.pre_tokenizer).__name__ != "BertPreTokenizer":
        return None  # the prefix rule is proven for BERT's pre-tokenizer only: other tokenizers see whole texts
    normalizer = json.loads(backend.to_str()).get("normalizer") or {}
    return SPLIT_POINTS_CJK if normalizer.get("handle_chinese_chars") else SPLIT_POINTS


def is_parsed(request):
    """Return True for a request to run (a ParsedRequest), False for one answered otherwise (error, describe)."""
    return isinstance(request, ParsedRequest)


class SentimentHandler(BaseHandler):
    """Classifies texts with the model and tokenizer packed in the .mar archive."""

    def initialize(self, context):
        """Load tokenizer and model from the extracted archive only; never from the network, then warm up."""
        # BaseHandler.initialize expects a TorchScript/state-dict file; loaded_model replaces it.
        properties = context.system_properties
        options = handler_options(context.model_yaml_config)
        model_dir = properties["model_dir"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = loaded_model(model_dir, options, properties.get("gpu_id"))
        self.runtime = options.runtime
        self.precision = options.precision
        self.max_length = self.token_limit(options.max_length)
        self.max_batch_tokens = max(options.max_batch_tokens, self.max_length)
        # A single text always fits in a request (0: no limit).
        self.max_request_tokens = options.max_request_tokens and max(options.max_request_tokens, self.max_length)
        self.batch_budget_tokens = options.batch_budget_tokens
        self.clock_offsets = ClockOffsets()
        self.reported_offsets = {}
        self.seconds_per_token = 0.0  # unknown until a batch was timed
        self.split_points = split_points(self.tokenizer)
        logger.info(
            "Loaded %s, %s (runtime=%s, precision=%s, threads=%d, max_length=%d, max_batch_tokens=%d, "
            "max_request_tokens=%d)",
            self.model.config.architectures[0] if self.model.config.architectures else "model",
            self.model.description,
            self.runtime,
            self.precision,
            options.threads,
            self.max_length,
            self.max_batch_tokens,
            self.max_request_tokens,
        )
        self.identity = model_identity(model_dir, context.manifest, self.model.config)
        self.warmed_shapes = self.warm_up(options.warmup_seconds)
        self.initialized = True

    def description(self):
        """Return who this worker is and what it accepts (a describe job's answer, the facade's /info)."""
        limits = {
            "max_text_tokens": self.max_length,
            "max_request_tokens": self.max_request_tokens,
            "max_batch_tokens": self.max_batch_tokens,
            "max_windows": MAX_WINDOWS,
        }
        return {**self.identity, "runtime": self.runtime, "precision": self.precision, **limits}

    def describe_handle(self):
        """Return the description as JSON, for the management API's describe?customized=true (operators)."""
        return json.dumps(self.description())

    def warm_up(self, budget_s):
        """Run the shapes traffic will bring before TorchServe marks the worker READY; return them."""
        if not budget_s:
            logger.info("Warm-up off (handler.warmup_seconds: 0)")
            return []
        started = time.monotonic()
        shapes = warmup_shapes(self.max_length, self.max_batch_tokens)
        done = warm_up(self.model, shapes, budget_s, self.tokenizer.cls_token_id or 0)
        logger.info(
            "Warm-up: %d of %d pass shapes in %.1f s (budget %d s, handler.warmup_seconds)",
            len(done),
            len(shapes),
            time.monotonic() - started,
            budget_s,
        )
        return done

    def prefixes(self, texts):
        """Return each text's shortest prefix with the tokens the model sees, plus one (which tells a cut text)."""
        if self.split_points is None:
            return list(texts)
        needed = self.max_length + 1
        return token_prefixes(texts, needed, self.token_counts, CHARS_PER_TOKEN * needed, self.split_points)

    def token_counts(self, texts):
        """Return each text's token count, special tokens included, in one tokenizer call."""
        return [len(ids) for ids in self.tokenizer(texts)["input_ids"]] if texts else []

    def token_lengths(self, groups):
        """Return each text's token count, grouped like `groups` (lists of texts), in one tokenizer call.

        Counted up to one past the limit: that tells a text that was cut from one that just fits.
        """
        texts = [text for group in groups for text in group]
        counts = iter(
            self.tokenizer(texts, truncation=True, max_length=self.max_length + 1)["input_ids"] if texts else []
        )
        return [[len(next(counts)) for _ in group] for group in groups]

    def token_limit(self, configured):
        """Return the token limit: the configured one, capped at what the model can take."""
        model_limit = getattr(self.model.config, "max_position_embeddings", None) or 512
        tokenizer_limit = self.tokenizer.model_max_length
        limit = min(model_limit, tokenizer_limit) if tokenizer_limit else model_limit
        return min(configured, limit) if configured else limit

    def preprocess(self, data):
        """Decode, price, admit, group and tokenize: the passes to run, and the answers of the rest."""
        requests = [
            DescribeJob() if self.context.get_request_header(index, DESCRIBE_HEADER) else self.cut(request)
            for index, request in enumerate(decoded(data))
        ]
        # Per request, each text's token count (up to one past the limit, which tells a cut text).
        lengths = self.token_lengths([request.texts if is_parsed(request) else [] for request in requests])
        costs = [
            self.cost(counts) if is_parsed(request) else None for request, counts in zip(requests, lengths, strict=True)
        ]
        started = time.monotonic()
        requests = self.admitted(requests, costs)
        # What TorchServe handed over, refused and skipped requests included.
        self.record_batch_size(len(requests), sum(len(counts) for counts in lengths))
        admitted = [index for index, request in enumerate(requests) if is_parsed(request)]
        texts = [text for index in admitted for text in requests[index].texts]
        batch = Batch(requests=requests, texts=texts, tokens=[cost or 0 for cost in costs], started=started)
        if texts:
            counts = [count for index in admitted for count in lengths[index]]
            batch.truncated = [count > self.max_length for count in counts]
            batch.chunks = self.passes(texts, [min(count, self.max_length) for count in counts])
        return batch

    def cut(self, request):
        """Return the request with the texts its truncation mode reads, or the error it gets.

        "right" (the default) reads each text's start: only a prefix is tokenized (the model's
        tokens, plus one), so a long text costs no more than the model reads. The other modes need
        the whole text (its end, or every window of it).
        """
        if not is_parsed(request):
            return request
        if request.truncation == "right":
            return dataclasses.replace(request, texts=self.prefixes(request.texts))
        return self.cut_long_texts(request)

    def cut_long_texts(self, request):
        """Return the request with its texts replaced by the parts its truncation mode reads, or the error it gets."""
        offsets = self.tokenizer(request.texts, add_special_tokens=False, return_offsets_mapping=True)
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add()
        if request.truncation == "error":
            for index, text_offsets in enumerate(offsets["offset_mapping"]):
                if len(text_offsets) > budget:
                    tokens = len(text_offsets) + self.tokenizer.num_special_tokens_to_add()
                    return TextTooManyTokensError(index, tokens, self.max_length)
            return request
        cuts = [
            cut(text, text_offsets, budget, request.truncation)
            for text, text_offsets in zip(request.texts, offsets["offset_mapping"], strict=True)
        ]
        return dataclasses.replace(
            request,
            texts=[part.text for text_cut in cuts for part in text_cut.parts],
            owners=tuple(index for index, text_cut in enumerate(cuts) for _ in text_cut.parts),
            weights=tuple(part.weight for text_cut in cuts for part in text_cut.parts),
            dropped=tuple(text_cut.dropped for text_cut in cuts),
        )

    def cost(self, counts):
        """Return what a request's texts cost, in tokens: each text as the model sees it, cut at the limit."""
        return sum(min(count, self.max_length) for count in counts)

    def admitted(self, requests, costs):
        """Return the requests, those not to run replaced by their answer (over the limit, too late, no room)."""
        header = self.context.get_request_header
        now = time.time()
        deadlines = [self.deadline(index, now) for index in range(len(requests))]
        deferrals = [deferrals_of(header(index, DEFERRALS_HEADER)) for index in range(len(requests))]
        decisions = admission(
            costs,
            deadlines,
            deferrals,
            now,
            self.max_request_tokens,
            self.max_length,
            budget=self.batch_budget_tokens,
            seconds_per_token=self.seconds_per_token,
        )
        return [
            request if decision is None else decision for request, decision in zip(requests, decisions, strict=True)
        ]

    def deadline(self, index, now):
        """Return request `index`'s deadline on this worker's clock (the sender's, corrected by its offset)."""
        header = self.context.get_request_header
        deadline = deadline_of(header(index, DEADLINE_HEADER))
        sender = header(index, SENDER_HEADER) or "-"
        offset = self.clock_offsets.offset_s(sender, deadline, deadline_of(header(index, BUDGET_HEADER)), now)
        # Said once per sender and whole second of skew, not on every job it sends.
        if offset and self.reported_offsets.get(sender) != round(offset):
            if len(self.reported_offsets) >= CLOCK_SENDERS:  # senders come and go (restarted facades)
                self.reported_offsets.clear()
            self.reported_offsets[sender] = round(offset)
            logger.warning(
                "The clock of %s is %.1f s %s this worker's; its deadlines are corrected",
                sender,
                abs(offset),
                "behind" if offset > 0 else "ahead of",
            )
        return deadline if deadline is None else deadline + offset

    def pass_plan(self, lengths):
        """Return the texts (indexes) of each forward pass, and the multiple the tokenizer pads them to (None: exact).

        torch's kernels cache per input shape, so its passes pad to a multiple of PAD_MULTIPLE (few
        shapes, flat memory); ONNX Runtime keeps no such cache and runs each pass at its longest text.
        """
        if self.runtime == "onnx":
            return exact_length_chunks(lengths, self.max_batch_tokens), None
        return length_sorted_chunks(lengths, self.max_batch_tokens), PAD_MULTIPLE

    def passes(self, texts, lengths):
        """Return the forward passes over `texts` as (text indices, tokenized inputs), similar lengths together."""
        chunks, multiple = self.pass_plan(lengths)
        logger.debug(
            "batch of %d texts in %d passes, padding efficiency %.2f",
            len(texts),
            len(chunks),
            padding_efficiency(lengths, chunks),
        )
        return [
            (
                chunk,
                self.tokenizer(
                    [texts[index] for index in chunk],
                    padding=True,
                    pad_to_multiple_of=multiple,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="np",
                ),
            )
            for chunk in chunks
        ]

    def record_batch_size(self, requests, texts):
        """Record how many requests and texts TorchServe handed over at once (histograms on the metrics port)."""
        dimensions = [Dimension("ModelName", self.context.manifest["model"]["modelName"]), Dimension("Level", "Model")]
        for name, value in ((BATCH_REQUESTS_METRIC, requests), (BATCH_TEXTS_METRIC, texts)):
            self.context.metrics.add_metric(
                name, value, "Count", dimensions=dimensions, metric_type=MetricTypes.HISTOGRAM
            )

    def inference(self, batch, *args, **kwargs):
        """Run the model over each pass and put the logits back in text order."""
        if not batch.chunks:
            return batch
        logits = np.concatenate(
            [self.model.logits(inputs["input_ids"], inputs["attention_mask"]) for _, inputs in batch.chunks]
        )
        # Row k of `logits` belongs to text order[k]: scatter the rows back to text order.
        order = [index for chunk, _ in batch.chunks for index in chunk]
        batch.logits = np.empty_like(logits)
        batch.logits[order] = logits
        return batch

    def postprocess(self, batch):
        """Return one response body per request, in order, with a 4xx status for bad ones."""
        self.learn_speed(batch)
        results = iter(self.text_results(batch))
        responses = []
        for index, request in enumerate(batch.requests):
            # The archive's version on every answer: the facade passes it on (X-Model-Version).
            self.context.set_response_header(index, MODEL_VERSION_HEADER, self.identity["archive_version"])
            if isinstance(request, InvalidRequestError):
                self.context.set_response_status(request.status, request.message, idx=index)
                self.context.set_response_content_type(index, "application/json")
                responses.append(error_body(request))
                self.log_request(index, 0, batch.tokens[index], request.status, request.code, len(batch.requests))
            elif isinstance(request, DescribeJob):
                responses.append(self.description())
                self.log_request(index, 0, 0, 200, "describe", len(batch.requests))
            else:
                body = response_body(request, self.request_results(request, [next(results) for _ in request.texts]))
                if not request.single:
                    body["tokens"] = batch.tokens[index]  # what the facade counts against its per-request limit
                responses.append(body)
                self.log_request(index, len(request.texts), batch.tokens[index], 200, "-", len(batch.requests))
        return responses

    def learn_speed(self, batch):
        """Update the worker's seconds per token from the batch just run (what deadlines are judged by)."""
        ran = sum(cost for cost, request in zip(batch.tokens, batch.requests, strict=True) if is_parsed(request))
        if ran:
            sample = (time.monotonic() - batch.started) / max(ran, SPEED_MIN_TOKENS)
            old = self.seconds_per_token
            self.seconds_per_token = sample if not old else (1 - SPEED_WEIGHT) * old + SPEED_WEIGHT * sample

    def log_request(self, index, texts, tokens, status, code, batch_size):
        """Log one line per request with the caller's X-Request-ID (never the text), for tracing.

        Refused and skipped requests get theirs too (status 413 or 503, code too_many_tokens,
        deadline_exceeded or busy), so the log shows what the worker did not run.
        """
        request_id = self.context.get_request_header(index, "X-Request-ID")
        trace_id = trace_id_of(self.context.get_request_header(index, "traceparent"))
        logger.info(
            "request_id=%s texts=%d tokens=%d status=%d code=%s batch=%d%s",
            request_id or "-",
            texts,
            tokens,
            status,
            code,
            batch_size,
            # The caller's W3C trace, when it sent one (the facade passes traceparent on).
            f" trace_id={trace_id}" if trace_id else "",
        )

    def text_results(self, batch):
        """Return (logits, truncated) per text of the batch, in text order."""
        if batch.logits is None:
            return []
        return list(zip(batch.logits, batch.truncated, strict=True))

    def request_results(self, request, rows):
        """Return one result per text the client sent, from the (logits, truncated) of its parts.

        `{"label", "score"}`, plus `"truncated": true` where part of the text was not read,
        `"windows"` under truncation "window", `"scores"` (every label, best first) and `"logits"`
        (by label; of windows, their weighted mean) on request.
        """
        id2label = self.model.config.id2label
        owners = request.owners or tuple(range(len(rows)))
        weights = request.weights or (1,) * len(rows)
        dropped = request.dropped or (False,) * len(rows)
        parts_of = [[] for _ in dropped]
        for index, owner in enumerate(owners):
            parts_of[owner].append(index)
        results = []
        for parts, text_dropped in zip(parts_of, dropped, strict=True):
            logits = np.stack([rows[index][0] for index in parts])
            part_weights = [weights[index] for index in parts]
            truncated = text_dropped or any(rows[index][1] for index in parts)
            windows = len(parts) if request.truncation == "window" else None
            result = text_result(
                averaged(softmax(logits), part_weights), id2label, truncated, request.all_scores, windows
            )
            if request.raw_scores:
                mean = averaged(logits, part_weights).tolist()
                result["logits"] = {id2label[index]: value for index, value in enumerate(mean)}
            results.append(result)
        return results
