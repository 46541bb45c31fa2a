"""TorchServe handler: a Hugging Face sequence classifier with dynamic batching.

TorchServe groups up to `batchSize` requests into one call of `handle`. Every text of
every valid request goes through one tokenizer call and one forward pass; the results
are split back per request, in order. A malformed request gets its own 4xx while the
rest of the batch still succeeds.
"""

import logging
import time
import warnings

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler

from sentiment_config import handler_options
from sentiment_requests import (
    DEADLINE_HEADER,
    Batch,
    InvalidRequestError,
    admission,
    deadline_of,
    error_body,
    length_sorted_chunks,
    padding_efficiency,
    parse_request,
    response_body,
)

logger = logging.getLogger(__name__)

# The worker's speed, for deadlines: learned from batches of at least this many tokens (in smaller
# ones the fixed cost per batch dominates), smoothed over about the last five.
SPEED_MIN_TOKENS = 256
SPEED_WEIGHT = 0.2


def dynamically_quantized(model):
    """Return the model with its Linear layers quantized to int8 (weights ahead, activations per call)."""
    # torch.ao.quantization is deprecated in favour of the separate torchao package but still
    # ships (and works) in the pinned torch 2.13; the warning would only repeat per worker.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def select_device(gpu_id):
    """Return the CUDA device TorchServe assigned to this worker, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def is_parsed(request):
    """Return True for a request to run (a ParsedRequest), False for one answered with an error."""
    return not isinstance(request, Exception)


class SentimentHandler(BaseHandler):
    """Classifies texts with the model and tokenizer packed in the .mar archive."""

    def initialize(self, context):
        """Load tokenizer and model from the extracted archive only; never from the network."""
        # BaseHandler.initialize expects a TorchScript/state-dict file; from_pretrained replaces it.
        properties = context.system_properties
        options = handler_options(context.model_yaml_config)
        self.device = select_device(properties.get("gpu_id"))
        if self.device.type == "cpu":
            torch.set_num_threads(options.threads)
        model_dir = properties["model_dir"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, local_files_only=True, dtype=torch.float32
        )
        self.model.to(self.device).eval()
        self.precision = options.precision
        if self.precision == "int8":
            self.model = dynamically_quantized(self.model)
        self.max_length = self.token_limit(options.max_length)
        self.max_batch_tokens = max(options.max_batch_tokens, self.max_length)
        # A single text always fits in a request (0: no limit).
        self.max_request_tokens = options.max_request_tokens and max(options.max_request_tokens, self.max_length)
        self.seconds_per_token = 0.0  # unknown until a batch was timed
        self.initialized = True
        logger.info(
            "Loaded %s on %s (precision=%s, threads=%d, max_length=%d, max_batch_tokens=%d, max_request_tokens=%d)",
            type(self.model).__name__,
            self.device,
            self.precision,
            torch.get_num_threads(),
            self.max_length,
            self.max_batch_tokens,
            self.max_request_tokens,
        )

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
        """Decode every request, refuse or skip the ones not to run, tokenize the rest in passes of similar length."""
        requests = []
        for row in data:
            try:
                requests.append(parse_request(row))
            except InvalidRequestError as error:
                requests.append(error)
        # Per request, each text's token count (up to one past the limit, which tells a cut text).
        lengths = self.token_lengths([request.texts if is_parsed(request) else [] for request in requests])
        tokens = [
            sum(min(n, self.max_length) for n in counts) if is_parsed(request) else None
            for request, counts in zip(requests, lengths, strict=True)
        ]
        deadlines = [deadline_of(self.context.get_request_header(index, DEADLINE_HEADER)) for index in range(len(data))]
        started = time.monotonic()
        decisions = admission(
            tokens, deadlines, time.time(), self.max_request_tokens, self.max_length, self.seconds_per_token
        )
        requests = [
            request if decision is None else decision for request, decision in zip(requests, decisions, strict=True)
        ]
        admitted = [index for index, request in enumerate(requests) if is_parsed(request)]
        texts = [text for index in admitted for text in requests[index].texts]
        batch = Batch(requests=requests, texts=texts, tokens=[cost or 0 for cost in tokens], started=started)
        if not texts:
            return batch
        lengths = [n for index in admitted for n in lengths[index]]
        batch.truncated = [length > self.max_length for length in lengths]
        lengths = [min(length, self.max_length) for length in lengths]
        chunks = length_sorted_chunks(lengths, self.max_batch_tokens)
        batch.chunks = [
            (
                chunk,
                self.tokenizer(
                    [texts[index] for index in chunk],
                    padding=True,
                    # Few distinct shapes: oneDNN caches a kernel per input shape, and unbounded
                    # variety grew the worker's RSS by 28% in 3 minutes of `make soak`.
                    pad_to_multiple_of=8,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ),
            )
            for chunk in chunks
        ]
        logger.debug(
            "batch of %d texts in %d passes, padding efficiency %.2f",
            len(texts),
            len(chunks),
            padding_efficiency(lengths, chunks),
        )
        return batch

    def inference(self, batch, *args, **kwargs):
        """Run the model over each pass and put the logits back in text order."""
        if not batch.chunks:
            return batch
        outputs = []
        with torch.inference_mode(), self.precision_context():
            for _, model_inputs in batch.chunks:
                model_inputs = {name: tensor.to(self.device) for name, tensor in model_inputs.items()}
                outputs.append(self.model(**model_inputs).logits)
        logits = torch.cat(outputs)
        # Row k of `logits` belongs to text order[k]: scatter the rows back to text order.
        order = torch.tensor([index for chunk, _ in batch.chunks for index in chunk], device=logits.device)
        batch.logits = torch.empty_like(logits).index_copy_(0, order, logits)
        return batch

    def precision_context(self):
        """Return the autocast context of the configured precision (a no-op for fp32 and int8)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def postprocess(self, batch):
        """Return one response body per request, in order, with a 4xx status for bad ones."""
        self.learn_speed(batch)
        results = iter(self.text_results(batch))
        responses = []
        for index, request in enumerate(batch.requests):
            if isinstance(request, InvalidRequestError):
                self.context.set_response_status(request.status, request.message, idx=index)
                self.context.set_response_content_type(index, "application/json")
                responses.append(error_body(request))
                self.log_request(index, 0, batch.tokens[index], request.status, request.code, len(batch.requests))
            else:
                responses.append(response_body(request, [next(results) for _ in request.texts]))
                self.log_request(index, len(request.texts), batch.tokens[index], 200, "-", len(batch.requests))
        return responses

    def learn_speed(self, batch):
        """Update the worker's seconds per token from the batch just run (what deadlines are judged by)."""
        ran = sum(cost for cost, request in zip(batch.tokens, batch.requests, strict=True) if is_parsed(request))
        if ran >= SPEED_MIN_TOKENS:
            sample = (time.monotonic() - batch.started) / ran
            old = self.seconds_per_token
            self.seconds_per_token = sample if not old else (1 - SPEED_WEIGHT) * old + SPEED_WEIGHT * sample

    def log_request(self, index, texts, tokens, status, code, batch_size):
        """Log one line per request with the caller's X-Request-ID (never the text), for tracing.

        Refused and skipped requests get theirs too (status 413 or 503, code too_many_tokens,
        deadline_exceeded or busy), so the log shows what the worker did not run.
        """
        request_id = self.context.get_request_header(index, "X-Request-ID")
        logger.info(
            "request_id=%s texts=%d tokens=%d status=%d code=%s batch=%d",
            request_id or "-",
            texts,
            tokens,
            status,
            code,
            batch_size,
        )

    def text_results(self, batch):
        """Return `{"label", "score"}` per text (plus `"truncated": true` where cut)."""
        if batch.logits is None:
            return []
        # float() first so half-precision logits still give exact float32 probabilities.
        probabilities = torch.softmax(batch.logits.float(), dim=-1).cpu()
        scores, label_ids = probabilities.max(dim=-1)
        results = []
        for score, label_id, truncated in zip(scores.tolist(), label_ids.tolist(), batch.truncated, strict=True):
            result = {"label": self.model.config.id2label[label_id], "score": score}
            if truncated:
                result["truncated"] = True
            results.append(result)
        return results
