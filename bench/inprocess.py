"""The in-process limit: the project's handler called directly, no server, every core."""

import os
import statistics
import time

import tools  # noqa: F401  (makes the handler's modules importable by their names in the .mar)
from bench.load import cpu_times, steal_share


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

    def set_response_header(self, *args, **kwargs):
        """No answer leaves the process here."""


def loaded_handler(model_dir, mode):
    """Return the project's handler, initialized on `model_dir` in `mode` (runtime and precision)."""
    from sentiment_handler import SentimentHandler

    handler = SentimentHandler()
    handler.initialize(BenchContext(model_dir, mode.handler_options()))
    return handler


def token_lengths(handler, texts):
    """Return each text's token count, as the handler would cut it."""
    return [min(len(ids), handler.max_length) for ids in handler.tokenizer(texts)["input_ids"]]


def batches_of(items, batch_size):
    """Return `items` cut into consecutive batches of `batch_size` (the last one shorter): every item once."""
    return [items[start : start + batch_size] for start in range(0, len(items), batch_size)]


def pass_figures(pass_seconds, sentences):
    """Return sentences/s of whole passes over `sentences` texts: the median pass, and the slowest and fastest."""
    rates = sorted(sentences / seconds for seconds in pass_seconds)
    return {
        "passes": len(rates),
        "sentences_per_s": round(statistics.median(rates), 1),
        "range_sentences_per_s": [round(rates[0], 1), round(rates[-1], 1)],
    }


def in_process_point(handler, texts, batch_size, passes, sort_by_length=False):
    """Classify every one of `texts` in batches of `batch_size`, `passes` times over; return the point.

    Whole passes only: a run cut off by a clock would measure whichever texts it reached (in
    length order, the shortest). sort_by_length: batches of neighbours in length order (the
    least padding any server could achieve), instead of consecutive texts in their own order.
    """
    if sort_by_length:
        lengths = token_lengths(handler, texts)
        texts = [texts[index] for index in sorted(range(len(texts)), key=lengths.__getitem__)]
    batches = batches_of([{"body": {"text": text}} for text in texts], batch_size)
    context = BenchContext("", {})
    handler.handle(batches[len(batches) // 2], context)  # warm-up
    latencies, pass_seconds = [], []
    cpu_before, process_before = cpu_times(), time.process_time()
    for _ in range(passes):
        started = time.perf_counter()
        for batch in batches:
            tick = time.perf_counter()
            handler.handle(batch, context)
            latencies.append(time.perf_counter() - tick)
        pass_seconds.append(time.perf_counter() - started)
    return {
        "batch_size": batch_size,
        "sorted": sort_by_length,
        "sentences": len(texts),
        **pass_figures(pass_seconds, len(texts)),
        "p50_ms_per_batch": round(statistics.median(latencies) * 1000, 2),
        # CPU time of this process (every thread) per batch: what the handler costs, whatever else runs.
        "cpu_ms_per_batch": round((time.process_time() - process_before) * 1000 / len(latencies), 2),
        "steal_share": steal_share(cpu_before, cpu_times()),
        "load_avg": round(os.getloadavg()[0], 2),
        **({} if sort_by_length else padding_figures(handler, texts, batch_size)),
    }


def padding_figures(handler, texts, batch_size):
    """Return the padding efficiency of batches of `batch_size`: one padded pass vs the handler's passes."""
    from sentiment_requests import padding_efficiency

    lengths = token_lengths(handler, texts)
    batches = [
        list(range(start, min(start + batch_size, len(lengths)))) for start in range(0, len(lengths), batch_size)
    ]
    sorted_passes = [
        [batch[index] for index in chunk]
        for batch in batches
        for chunk in handler.pass_plan([lengths[i] for i in batch])[0]
    ]
    return {
        "padding_efficiency_one_pass": round(padding_efficiency(lengths, batches), 3),
        "padding_efficiency_sorted_passes": round(padding_efficiency(lengths, sorted_passes), 3),
    }
