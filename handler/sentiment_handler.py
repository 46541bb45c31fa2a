"""TorchServe handler: a Hugging Face sequence classifier with dynamic batching.

TorchServe groups up to `batchSize` requests into one call of `handle`. Every text of
every valid request goes through one tokenizer call and one forward pass; the results
are split back per request, in order. A malformed request gets its own 4xx while the
rest of the batch still succeeds.

The model runs on ONNX Runtime (the CPU default) or torch (GPU, bf16, or by choice), as
model-config.yaml's handler.runtime says (sentiment_runtime.py). Before TorchServe marks the
worker READY, `initialize` runs the model over the pass shapes traffic will bring (warm-up).
"""

import logging
import time

import numpy as np
from transformers import AutoTokenizer
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from sentiment_config import handler_options
from sentiment_requests import (
    Batch,
    InvalidRequestError,
    error_body,
    length_sorted_chunks,
    padding_efficiency,
    parse_request,
    response_body,
)
from sentiment_runtime import loaded_model, softmax, warm_up, warmup_shapes

logger = logging.getLogger(__name__)

# Declared in torchserve-metrics.yaml (TorchServe's prometheus mode drops undeclared metrics).
BATCH_TEXTS_METRIC = "sentiment_batch_texts"
BATCH_REQUESTS_METRIC = "sentiment_batch_requests"


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
        logger.info(
            "Loaded %s, %s (runtime=%s, precision=%s, threads=%d, max_length=%d, max_batch_tokens=%d)",
            self.model.config.architectures[0] if self.model.config.architectures else "model",
            self.model.description,
            self.runtime,
            self.precision,
            options.threads,
            self.max_length,
            self.max_batch_tokens,
        )
        self.warmed_shapes = self.warm_up(options.warmup_seconds)
        self.initialized = True

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

    def token_limit(self, configured):
        """Return the token limit: the configured one, capped at what the model can take."""
        model_limit = getattr(self.model.config, "max_position_embeddings", None) or 512
        tokenizer_limit = self.tokenizer.model_max_length
        limit = min(model_limit, tokenizer_limit) if tokenizer_limit else model_limit
        return min(configured, limit) if configured else limit

    def preprocess(self, data):
        """Decode every request; tokenize all valid texts in passes of similar length."""
        requests = []
        for row in data:
            try:
                requests.append(parse_request(row))
            except InvalidRequestError as error:
                requests.append(error)
        texts = [text for request in requests if not isinstance(request, Exception) for text in request.texts]
        batch = Batch(requests=requests, texts=texts)
        self.record_batch_size(len(requests), len(texts))
        if not texts:
            return batch
        # One token past the limit tells a text that was cut from one that just fits.
        lengths = [
            len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length + 1)["input_ids"]
        ]
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
                    return_tensors="np",
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
        results = iter(self.text_results(batch))
        responses = []
        for index, request in enumerate(batch.requests):
            if isinstance(request, InvalidRequestError):
                self.context.set_response_status(request.status, request.message, idx=index)
                self.context.set_response_content_type(index, "application/json")
                responses.append(error_body(request))
                self.log_request(index, 0, request.status, len(batch.requests))
            else:
                responses.append(response_body(request, [next(results) for _ in request.texts]))
                self.log_request(index, len(request.texts), 200, len(batch.requests))
        return responses

    def log_request(self, index, texts, status, batch_size):
        """Log one line per request with the caller's X-Request-ID (never the text), for tracing."""
        request_id = self.context.get_request_header(index, "X-Request-ID")
        logger.info("request_id=%s texts=%d status=%d batch=%d", request_id or "-", texts, status, batch_size)

    def text_results(self, batch):
        """Return `{"label", "score"}` per text (plus `"truncated": true` where cut)."""
        if batch.logits is None:
            return []
        probabilities = softmax(batch.logits)
        scores, label_ids = probabilities.max(axis=-1), probabilities.argmax(axis=-1)
        results = []
        for score, label_id, truncated in zip(scores.tolist(), label_ids.tolist(), batch.truncated, strict=True):
            result = {"label": self.model.config.id2label[label_id], "score": score}
            if truncated:
                result["truncated"] = True
            results.append(result)
        return results
