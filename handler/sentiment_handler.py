"""TorchServe handler: a Hugging Face sequence classifier with dynamic batching.

TorchServe groups up to `batchSize` requests into one call of `handle`. Every text of
every valid request goes through one tokenizer call and one forward pass; the results
are split back per request, in order. A malformed request gets its own 4xx while the
rest of the batch still succeeds.
"""

import logging

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler

from sentiment_config import handler_options
from sentiment_requests import Batch, InvalidRequestError, error_body, parse_request, response_body

logger = logging.getLogger(__name__)


def select_device(gpu_id):
    """Return the CUDA device TorchServe assigned to this worker, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


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
        self.max_length = self.token_limit(options.max_length)
        self.initialized = True
        logger.info(
            "Loaded %s on %s (threads=%d, max_length=%d)",
            type(self.model).__name__,
            self.device,
            torch.get_num_threads(),
            self.max_length,
        )

    def token_limit(self, configured):
        """Return the token limit: the configured one, capped at what the model can take."""
        model_limit = getattr(self.model.config, "max_position_embeddings", None) or 512
        tokenizer_limit = self.tokenizer.model_max_length
        limit = min(model_limit, tokenizer_limit) if tokenizer_limit else model_limit
        return min(configured, limit) if configured else limit

    def preprocess(self, data):
        """Decode every request and tokenize all valid texts of the batch in one call."""
        requests = []
        for row in data:
            try:
                requests.append(parse_request(row))
            except InvalidRequestError as error:
                requests.append(error)
        texts = [text for request in requests if not isinstance(request, Exception) for text in request.texts]
        batch = Batch(requests=requests, texts=texts)
        if texts:
            batch.model_inputs = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            batch.truncated = self.truncated_flags(texts, batch.model_inputs["attention_mask"])
        return batch

    def truncated_flags(self, texts, attention_mask):
        """Return, per text, whether the tokenizer cut it at the token limit."""
        lengths = attention_mask.sum(dim=1).tolist()
        # Only a text that fills the limit exactly can have been cut; re-tokenize just those.
        return [
            length == self.max_length
            and len(self.tokenizer(text, truncation=True, max_length=self.max_length + 1)["input_ids"])
            > self.max_length
            for text, length in zip(texts, lengths, strict=True)
        ]

    def inference(self, batch, *args, **kwargs):
        """Run one forward pass over every text of the batch."""
        if batch.model_inputs is not None:
            model_inputs = {name: tensor.to(self.device) for name, tensor in batch.model_inputs.items()}
            with torch.inference_mode():
                batch.logits = self.model(**model_inputs).logits
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
