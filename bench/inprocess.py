"""The in-process limit: the project's handler called directly, no server, every core."""

import statistics
import time

import tools  # noqa: F401  (makes the handler's modules importable by their names in the .mar)


class BenchContext:
    """The little of TorchServe's Context that the handler uses, for calling it directly."""

    def __init__(self, model_dir, handler_options):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.model_yaml_config = {"minWorkers": 1, "handler": handler_options}
        self.manifest = {"model": {"modelName": "sentiment"}}
        self.metrics = self

    def add_time(self, *args, **kwargs):
        """Ignore the handler's timing metric."""

    def add_metric(self, *args, **kwargs):
        """Ignore the handler's batch-size metrics (the benchmark knows its batch sizes)."""

    def get_request_header(self, idx, key):
        """No request carries headers here."""

    def set_response_status(self, *args, **kwargs):
        """Every request is valid here."""

    def set_response_content_type(self, *args, **kwargs):
        """Every request is valid here."""


def loaded_handler(model_dir, mode):
    """Return the project's handler, initialized on `model_dir` in `mode` (runtime and precision)."""
    from sentiment_handler import SentimentHandler

    handler = SentimentHandler()
    handler.initialize(BenchContext(model_dir, mode.handler_options()))
    return handler


def token_lengths(handler, texts):
    """Return each text's token count, as the handler would cut it."""
    return [min(len(ids), handler.max_length) for ids in handler.tokenizer(texts)["input_ids"]]


def in_process_point(handler, texts, batch_size, duration_s, sort_by_length=False):
    """Classify `texts` in batches of `batch_size` for about `duration_s`; return the point.

    sort_by_length: batches of neighbours in length order (the least padding any server
    could achieve: the ceiling), instead of consecutive texts in their own order.
    """
    if sort_by_length:
        lengths = token_lengths(handler, texts)
        texts = [texts[index] for index in sorted(range(len(texts)), key=lengths.__getitem__)]
    rows = [{"body": {"text": text}} for text in texts]
    context = BenchContext("", {})
    handler.handle(rows[:batch_size], context)  # warm-up
    latencies, done, started = [], 0, time.perf_counter()
    while time.perf_counter() - started < duration_s:
        start = (done * batch_size) % max(1, len(rows) - batch_size)
        tick = time.perf_counter()
        handler.handle(rows[start : start + batch_size], context)
        latencies.append(time.perf_counter() - tick)
        done += 1
    elapsed = time.perf_counter() - started
    return {
        "batch_size": batch_size,
        "sorted": sort_by_length,
        "sentences_per_s": round(done * batch_size / elapsed, 1),
        "p50_ms_per_batch": round(statistics.median(latencies) * 1000, 2),
        **({} if sort_by_length else padding_figures(handler, texts, batch_size)),
    }


def padding_figures(handler, texts, batch_size):
    """Return the padding efficiency of batches of `batch_size`: one padded pass vs length-sorted passes."""
    from sentiment_requests import length_sorted_chunks, padding_efficiency

    lengths = token_lengths(handler, texts)
    batches = [
        list(range(start, min(start + batch_size, len(lengths)))) for start in range(0, len(lengths), batch_size)
    ]
    sorted_passes = [
        [batch[index] for index in chunk]
        for batch in batches
        for chunk in length_sorted_chunks([lengths[i] for i in batch], handler.max_batch_tokens)
    ]
    return {
        "padding_efficiency_one_pass": round(padding_efficiency(lengths, batches), 3),
        "padding_efficiency_sorted_passes": round(padding_efficiency(lengths, sorted_passes), 3),
    }
