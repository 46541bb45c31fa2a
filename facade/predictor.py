"""The client for TorchServe's inference API (predictions) and management API (readiness)."""

import logging
import time
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from facade.errors import (
    TextTooManyTokensError,
    TooManyTokensError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from facade.info import MODEL_VERSION_HEADER, described_model, note_served_version
from facade.options import result_extras
from facade.settings import Settings
from facade.tokens import TokenLimits
from facade.tracing import trace_headers

log = logging.getLogger(__name__)

UNAVAILABLE = "The sentiment model is not available right now (starting, stopping or busy); retry shortly."
TIMED_OUT = "The sentiment model took too long to answer; retry, or send fewer or shorter texts."
# What TorchServe's frontend answers for the requests of a batch whose Python worker process went
# away mid-inference (killed, crashed, out of memory, or scaled down): 500, or 507 when the worker
# was SIGKILLed, with one of these messages. TorchServe starts a new worker by itself; the request
# can run again, since inference has no side effects. A handler that raised is a different answer
# (503 "Prediction failed"), and stays a backend error.
WORKER_LOST_MESSAGES = ("Worker died.", "Worker scaled down.")
# Not worth a retry with less time than this left of the read timeout.
MIN_RETRY_S = 0.5
# Each request tells the handler when the facade stops waiting for it (Unix time; see
# handler/sentiment_requests.py), a little before the read timeout, so that a request the worker
# answers at once because it is too late reaches the facade before the facade gives up on it.
DEADLINE_HEADER = "X-Request-Deadline"
DEADLINE_MARGIN_S = 0.5
# What the handler answers, with 503, for a request it did not run: its deadline passed while it
# was queued, or the batch's token budget was spent on cheaper requests. Both pass on a retry.
NOT_SERVED_CODES = ("deadline_exceeded", "busy")


class TorchServeClient:
    """Classifies texts through TorchServe and reports whether its model can serve."""

    def __init__(self, settings: Settings):
        model = quote(settings.model_name, safe="")
        self._predict_url = f"{settings.torchserve_url.rstrip('/')}/predictions/{model}"
        self._describe_url = f"{settings.torchserve_management_url.rstrip('/')}/models/{model}"
        self._connect_timeout = settings.connect_timeout_s
        self._read_timeout = settings.read_timeout_s
        connect_s = min(settings.connect_timeout_s, settings.ready_timeout_s)
        self._ready_timeout = (connect_s, settings.ready_timeout_s)
        self._session = pooled_session(settings.threads)
        self.token_limits = TokenLimits()

    def classify(self, texts: list[str], request_id: str, options: dict | None = None) -> list[dict]:
        """Return one {"label", "score"[, "truncated"]} dict per text, in input order.

        The whole call, a retry included, takes at most the read timeout (plus connecting).
        Texts surely over the handler's token limit are refused here, without asking TorchServe.
        """
        refusal = self.token_limits.refusal(texts)
        if refusal is not None:
            raise TooManyTokensError(refusal)
        deadline = time.monotonic() + self._read_timeout
        response = self._post(texts, request_id, self._read_timeout, options)
        if _worker_lost(response):
            # Once: the new worker takes the retry from TorchServe's queue as soon as it is up.
            # If this request is what kills workers, a second death answers 503, not a third try.
            left_s = deadline - time.monotonic()
            log.warning(
                "TorchServe lost the worker running request %s (%s); %s",
                request_id,
                response.status_code,
                f"retrying once within {left_s:.1f} s" if left_s >= MIN_RETRY_S else "no time left to retry",
            )
            if left_s >= MIN_RETRY_S:
                response = self._post(texts, request_id, left_s, options)
        if response.status_code != 200:
            raise self._status_error(response, request_id)
        results = _results(response, len(texts), request_id, options or {})
        note_served_version(response.headers.get(MODEL_VERSION_HEADER))
        return results

    def describe(self) -> dict:
        """Return what the handler says about the model (identity, labels, token limits), or raise 503."""
        try:
            response = self._session.get(
                self._describe_url, params={"customized": "true"}, timeout=self._ready_timeout, allow_redirects=False
            )
            response.raise_for_status()
            return described_model(response.json())
        except (requests.RequestException, ValueError) as exc:
            log.info("TorchServe describe failed: %s", exc)
            raise UpstreamUnavailableError(UNAVAILABLE) from exc

    def is_ready(self) -> bool:
        """Return True when TorchServe has at least one READY worker for the model."""
        try:
            response = self._session.get(self._describe_url, timeout=self._ready_timeout, allow_redirects=False)
            response.raise_for_status()
            return _has_ready_worker(response.json())
        except (requests.RequestException, ValueError) as exc:
            log.info("TorchServe readiness check failed: %s", exc)
            return False

    def close(self) -> None:
        """Close the pooled connections; the app itself keeps one client for its whole life."""
        self._session.close()

    def _post(
        self, texts: list[str], request_id: str, read_timeout_s: float, options: dict | None = None
    ) -> requests.Response:
        try:
            return self._session.post(
                self._predict_url,
                json={"texts": texts, **(options or {})},
                # Wall-clock time, since it must mean the same in the worker's process (on another
                # host, their clocks must be kept in sync: NTP; skew eats into DEADLINE_MARGIN_S).
                headers={
                    **trace_headers(),
                    "X-Request-ID": request_id,
                    DEADLINE_HEADER: f"{time.time() + read_timeout_s - DEADLINE_MARGIN_S:.3f}",
                },
                timeout=(self._connect_timeout, read_timeout_s),
                allow_redirects=False,
            )
        except requests.ConnectionError as exc:  # refused, reset, or no connection in time
            log.warning("TorchServe unreachable for request %s: %s", request_id, exc)
            raise UpstreamUnavailableError(UNAVAILABLE) from exc
        except requests.Timeout as exc:
            log.warning("TorchServe read timeout for request %s: %s", request_id, exc)
            raise UpstreamTimeoutError(TIMED_OUT) from exc
        except requests.RequestException as exc:
            raise _malformed(request_id, f"request failed: {exc}") from exc

    def _status_error(self, response: requests.Response, request_id: str) -> Exception:
        error = _handler_error(response)
        if response.status_code == 413 and error.get("code") == "too_many_tokens":
            self.token_limits.learn(error.get("max_request_tokens"), error.get("max_text_tokens"))
            return TooManyTokensError(_message(error, "The request has too many tokens; split it."))
        if response.status_code == 413 and error.get("code") == "text_too_many_tokens":
            return TextTooManyTokensError(_message(error, "A text is over the model's token limit."))
        if response.status_code == 503 and error.get("code") in NOT_SERVED_CODES:
            log.info("TorchServe did not run request %s: %s", request_id, error["code"])
            return UpstreamUnavailableError(_message(error, UNAVAILABLE))
        return _status_error(response, request_id)


def _handler_error(response: requests.Response) -> dict:
    # The handler's own error body: {"error": {"code", "message", ...}}; {} for anything else.
    body = _json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _message(error: dict, default: str) -> str:
    message = error.get("message")
    return message if isinstance(message, str) and 0 < len(message) <= 500 else default


def pooled_session(pool_size: int) -> requests.Session:
    """Return a Session that keeps up to pool_size connections per TorchServe API."""
    session = requests.Session()
    # TorchServe is a private backend: a proxy from HTTP_PROXY and friends must not carry its traffic.
    session.trust_env = False
    # Retry only a failed connect: the request never left, so it cannot run inference twice.
    retry = Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0, raise_on_status=False)
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _has_ready_worker(description: object) -> bool:
    # The management API describes a model as a list with one entry per version.
    models = description if isinstance(description, list) else []
    workers = [w for m in models if isinstance(m, dict) for w in m.get("workers") or ()]
    return any(isinstance(worker, dict) and worker.get("status") == "READY" for worker in workers)


def _worker_lost(response: requests.Response) -> bool:
    if response.status_code not in (500, 507):
        return False
    body = _json_or_none(response)
    return isinstance(body, dict) and body.get("message") in WORKER_LOST_MESSAGES


def _status_error(response: requests.Response, request_id: str) -> Exception:
    if _worker_lost(response):
        log.warning("TorchServe lost the worker running request %s; answering 503", request_id)
        return UpstreamUnavailableError(UNAVAILABLE)
    body = _json_or_none(response)
    # TorchServe answers 503 "Prediction failed" (InternalServerException) when the handler raised.
    handler_failed = isinstance(body, dict) and ("error" in body or body.get("type") == "InternalServerException")
    # 503: no worker or job queue full; 404: model not registered. Both pass once TorchServe
    # catches up, unlike a handler that failed or rejected the input.
    if response.status_code in (404, 503) and not handler_failed:
        log.warning("TorchServe answered %s for request %s: %s", response.status_code, request_id, _summary(body))
        return UpstreamUnavailableError(UNAVAILABLE)
    return _malformed(request_id, f"status {response.status_code}: {_summary(body)}")


def _results(response: requests.Response, expected: int, request_id: str, options: dict) -> list[dict]:
    body = _json_or_none(response)
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise _malformed(request_id, f"expected {expected} results, got {_summary(body)}")
    public = [_public_result(item, options) for item in results]
    if None in public:
        raise _malformed(
            request_id, "a result lacks a label, a score in [0, 1] or a boolean truncated, or has bad scores or windows"
        )
    return public


def _public_result(item: object, options: dict) -> dict | None:
    if not isinstance(item, dict):
        return None
    label, score, truncated = item.get("label"), item.get("score"), item.get("truncated", False)
    if not (isinstance(label, str) and label and isinstance(truncated, bool)):
        return None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return None
    result = {"label": label, "score": float(score)}
    if truncated:
        result["truncated"] = True
    extras = result_extras(item, options)
    return None if extras is None else {**result, **extras}


def _json_or_none(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _summary(body: object) -> str:
    # Log what TorchServe or the handler said about the failure, never the texts themselves.
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"handler error {body['error'].get('code')!r}"
    if isinstance(body, dict) and "type" in body:
        return f"{body.get('type')}: {str(body.get('message'))[:200]}"
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        return f"{len(body['results'])} results"
    return "a body that is not the agreed JSON"


def _malformed(request_id: str, detail: str) -> UpstreamError:
    log.error("Unexpected answer from TorchServe for request %s: %s", request_id, detail)
    return UpstreamError(f"The sentiment model gave an unexpected answer; it was logged with request ID {request_id}.")
