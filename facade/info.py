"""Which model answers: GET /info, and the archive version stamped on every answer it produced.

The handler is the one that knows: it stamps the archive's version (tools/build_mar.py derives
it from everything packed) on each answer as X-Model-Version, and reports the model's id,
revision, labels and token limits when asked with a describe job: a request on the inference API
with DESCRIBE_HEADER, which the worker answers without running the model (the facade never uses
TorchServe's management API). The answer is cached for FACADE_INFO_TTL_S, since a describe job
waits in the worker's queue like any job.
The per-answer header is what tells a client which version produced a given result while two
archives take turns (a rollout), which a cached /info cannot.
"""

import threading
import time
from contextvars import ContextVar

from facade.errors import UpstreamUnavailableError
from facade.settings import SAFE_ID, TRUNCATION_MODES, Settings

MODEL_VERSION_HEADER = "X-Model-Version"
# Asks the handler for its description instead of a classification (handler/sentiment_info.py).
DESCRIBE_HEADER = "X-Sentiment-Describe"
UNKNOWN = "unknown"
# At most this many versions are told apart in the metrics of one process (a rollout brings two);
# any further one is counted as "other", so the label's cardinality stays bounded.
MAX_VERSION_LABELS = 8
OTHER = "other"
# What PRECISION=auto measured, as tools/precision_gate.py records it (absent for torch archives).
CHOICE_FIGURES = ("sample", "sentences", "flip_rate", "max_score_change", "max_flip_rate", "fp32_layers")

_served_version: ContextVar[str | None] = ContextVar("served_version", default=None)


def forget_served_version() -> None:
    """Start a TorchServe call with no version noted (a thread serves many requests in turn)."""
    _served_version.set(None)


def note_served_version(value: str | None) -> None:
    """Note the archive version TorchServe's answer carried, when it is a safe token."""
    _served_version.set(value if isinstance(value, str) and SAFE_ID.fullmatch(value) else None)


def served_version() -> str | None:
    """Return the archive version of the answer the current request got, or None."""
    return _served_version.get()


def described_model(description: object, served_version: str | None) -> dict:
    """Return the handler's answer to a describe job, with the archive version that answered it."""
    if not isinstance(description, dict) or not isinstance(description.get("labels"), list):
        raise ValueError("a body that is not the handler's description")
    version = served_version or description.get("archive_version")
    return {**description, "archive_version": str(version or UNKNOWN)}


def info_body(settings: Settings, model: dict) -> dict:
    """Return GET /info's body: the model, and every limit and option a client must respect."""
    return {
        "model": {
            "name": settings.model_name,
            "id": str(model.get("model_id") or UNKNOWN),
            "revision": str(model.get("revision") or UNKNOWN),
            "archive_version": str(model.get("archive_version") or UNKNOWN),
            "runtime": str(model.get("runtime") or UNKNOWN),
            "precision": str(model.get("precision") or UNKNOWN),
            "labels": [str(label) for label in model.get("labels") or ()],
            "precision_choice": precision_choice(model.get("precision_choice")),
        },
        "limits": {
            "max_texts": settings.max_texts,
            "max_text_chars": settings.max_text_chars,
            "max_body_bytes": settings.max_body_bytes,
            "max_text_tokens": _count(model.get("max_text_tokens")),
            "max_request_tokens": _count(model.get("max_request_tokens")),
            "max_windows": _count(model.get("max_windows")),
            "timeout_s": settings.read_timeout_s,
        },
        "truncation": {"default": settings.default_truncation, "modes": list(TRUNCATION_MODES)},
    }


class ModelInfo:
    """What the handler last said about the model, asked again after `ttl_s`."""

    def __init__(self, ttl_s: float, clock=time.monotonic):
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached = None  # (description, when)

    def current(self, predictor) -> dict:
        """Return the model's description, from the cache or from TorchServe (503 when it cannot say)."""
        with self._lock:
            cached = self._cached
        if cached is not None and self._clock() - cached[1] < self._ttl_s:
            return cached[0]
        describe = getattr(predictor, "describe", None)
        if describe is None:
            raise UpstreamUnavailableError("The model cannot be described by this predictor.")
        description = describe()
        with self._lock:
            self._cached = (description, self._clock())
        return description


class VersionLabels:
    """The model_version label values of one process: the first MAX_VERSION_LABELS seen, then "other"."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def label(self, version: str | None) -> str:
        """Return the label value for an answer of `version` (None: the answer carried none)."""
        if version is None:
            return UNKNOWN
        with self._lock:
            if version in self._seen or len(self._seen) < MAX_VERSION_LABELS:
                self._seen.add(version)
                return version
        return OTHER


def precision_choice(choice: object) -> dict | None:
    """Return PRECISION=auto's decision as /info shows it, or None when the archive was built with a fixed precision."""
    if not isinstance(choice, dict):
        return None
    texts = {key: str(choice.get(key) or UNKNOWN) for key in ("requested", "precision", "reason")}
    figures = {key: choice[key] for key in CHOICE_FIGURES if isinstance(choice.get(key), int | float | str | list)}
    return {**texts, **figures}


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
