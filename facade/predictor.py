"""The client for TorchServe's inference API: predictions, describe jobs (/info) and /ping (readiness).

The facade never uses TorchServe's management API: that stays with the operators' tools
(docs/security.md, "TorchServe's management API").
"""

import json
import logging
import threading
import time
from urllib.parse import quote

import urllib3
from urllib3.exceptions import HTTPError

from facade.admission import HeavyRequests, projected_overrun_s, room
from facade.errors import (
    SaturatedError,
    TextTooManyTokensError,
    TooManyTokensError,
    UpstreamError,
    UpstreamSaturatedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from facade.info import DESCRIBE_HEADER, MODEL_VERSION_HEADER, described_model, note_served_version, served_version
from facade.jobs import JOB_TOKENS, job_slices
from facade.options import result_extras
from facade.replicas import (
    CONNECT,
    MIN_RETRY_S,
    NOT_SERVED,
    TIMEOUT,
    UNANSWERED,
    Replicas,
    failure_kind,
    readiness_order,
    retry_target,
)
from facade.settings import Settings, split_urls
from facade.tokens import TokenLimits, tokens_at_least, too_many_tokens_message
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
# Connection pools the client keeps, one per replica (beyond it, the oldest is dropped).
POOLED_REPLICAS = 16
# Each request tells the handler when the facade stops waiting for it (Unix time; see
# handler/sentiment_requests.py), a little before the read timeout, so that a request the worker
# answers at once because it is too late reaches the facade before the facade gives up on it.
DEADLINE_HEADER = "X-Request-Deadline"
DEADLINE_MARGIN_S = 0.5
# What the handler answers, with 503, for a request it did not run: its deadline passed while it
# was queued (passes on a retry), or the batch's token budget went to older jobs (`busy`: the job
# is sent again at once, with its count of deferrals, which ranks it above newer jobs).
NOT_SERVED_CODES = ("deadline_exceeded", "busy")
DEFERRALS_HEADER = "X-Job-Deferrals"
# With the deadline, the seconds left when the job was sent and who sent it: the handler measures
# this facade's clock against its own from them and corrects for any skew (handler ClockOffsets).
BUDGET_HEADER = "X-Request-Budget"
SENDER_HEADER = "X-Facade-ID"
# The shipped handler's limits per TorchServe request (handler/model-config.yaml's max_request_tokens,
# and DistilBERT's 512 tokens per text): jobs are cut to them until a 413 states others.
HANDLER_REQUEST_TOKENS = 2048
HANDLER_TEXT_TOKENS = 512
SATURATED = (
    "The service is saturated: this request could not be served before its deadline; "
    "retry after the number of seconds in the Retry-After header, or send fewer texts."
)
FULL = (
    "This instance has as many requests in progress and waiting as it takes; "
    "retry after the number of seconds in the Retry-After header."
)
TURNED_AWAY = (
    "The service is saturated: it runs as many large requests as it can serve in time, and this one "
    "was turned away before any of its work was done; retry after the number of seconds in the "
    "Retry-After header, or send fewer texts per request (requests of a few texts are still served)."
)


class TorchServeClient:
    """Classifies texts through TorchServe and reports whether its model can serve."""

    def __init__(self, settings: Settings):
        self._predict_path = f"/predictions/{quote(settings.model_name, safe='')}"
        self._inference = Replicas(split_urls(settings.torchserve_url), settings.resolve_interval_s)
        self._connect_timeout = settings.connect_timeout_s
        self._read_timeout = settings.read_timeout_s
        self._ready_timeout_s = settings.ready_timeout_s
        self._pools = replica_pools(settings.threads)
        self._max_request_tokens = settings.max_request_tokens
        self._sender = settings.container_id
        self.token_limits = TokenLimits(HANDLER_REQUEST_TOKENS, HANDLER_TEXT_TOKENS)
        self.heavy = HeavyRequests(settings.threads, settings.read_timeout_s)
        # FACADE_THREADS classify at once and more wait (facade/admission.py PROBE_THREADS).
        self._slots = threading.BoundedSemaphore(settings.threads)
        self._room = threading.BoundedSemaphore(room(settings.threads))
        self._retry_after_s = settings.retry_after_s

    def classify(self, texts: list[str], request_id: str, options: dict | None = None) -> list[dict]:
        """Return one {"label", "score"[, "truncated"]} dict per text, in input order.

        The texts go to TorchServe as jobs (facade/jobs.py), one at a time; the whole call takes at
        most the read timeout (plus connecting). A request surely over the limit per request is
        refused before any job runs, and stopped as soon as the tokens the handler counted for its
        jobs so far, plus a lower bound of the rest, are over it.
        """
        if not self._room.acquire(blocking=False):
            raise SaturatedError(FULL, max(1, self._retry_after_s))
        try:
            if not self._slots.acquire(timeout=self._read_timeout):
                raise UpstreamSaturatedError(SATURATED, max(1, self._retry_after_s))
            try:
                return self._classify(texts, request_id, options or {})
            finally:
                self._slots.release()
        finally:
            self._room.release()

    def _classify(self, texts: list[str], request_id: str, options: dict) -> list[dict]:
        limit = self._max_request_tokens
        handler_tokens, text_tokens = self.token_limits.current()
        job_tokens = min(JOB_TOKENS, handler_tokens)
        at_least = [tokens_at_least(text, text_tokens) for text in texts]
        _refuse_over(sum(at_least), limit, text_tokens)
        jobs = job_slices(texts, job_tokens, text_tokens)
        if len(jobs) == 1:
            return self._jobs(jobs, texts, at_least, request_id, options)
        if not self.heavy.try_start():
            raise SaturatedError(TURNED_AWAY, self.heavy.retry_after_s())
        started, late = time.monotonic(), False
        try:
            return self._jobs(jobs, texts, at_least, request_id, options)
        except (UpstreamSaturatedError, UpstreamTimeoutError):
            late = True
            raise
        finally:
            self.heavy.finish(not late, time.monotonic() - started)

    def _jobs(
        self, jobs: list[slice], texts: list[str], at_least: list[int], request_id: str, options: dict
    ) -> list[dict]:
        limit = self._max_request_tokens
        text_tokens = self.token_limits.current()[1]
        started = time.monotonic()
        deadline = started + self._read_timeout
        results, counted, version = [], 0, None
        for done, job in enumerate(jobs):
            if done:  # before the first job, _classify has checked the same sum
                _refuse_over(counted + sum(at_least[job.start :]), limit, text_tokens)
            now = time.monotonic()
            self._stop_if_late(projected_overrun_s(now - started, done, len(jobs) - done, deadline - now), request_id)
            try:
                job_results, tokens = self._job(texts[job], request_id, deadline, options, version=version)
            except TextTooManyTokensError as exc:
                raise exc.at_offset(job.start) from exc
            results.extend(job_results)
            counted += tokens
            # The later jobs go to the version that answered the first: a model upgrade switching
            # TorchServe's default mid-request never mixes two models' results in one answer.
            version = version or served_version()
        return results

    def _stop_if_late(self, overrun_s: float, request_id: str) -> None:
        if overrun_s > 0:
            log.info("Request %s would end %.1f s past its deadline: stopped", request_id, overrun_s)
            raise UpstreamSaturatedError(SATURATED, self.heavy.retry_after_s())

    def _job(
        self,
        texts: list[str],
        request_id: str,
        deadline: float,
        options: dict,
        recut: bool = True,
        version: str | None = None,
    ) -> tuple[list[dict], int]:
        """Return the results of one job (of `version`, else the default) and the tokens the handler counted."""
        deferrals, retried = 0, False
        while True:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                self._stop_if_late(1.0, request_id)
            response = self._post(texts, request_id, left_s, options, deferrals, version)
            if _worker_lost(response) and not retried:
                # Once: the new worker takes the retry from TorchServe's queue as soon as it is up.
                # If this request is what kills workers, a second death answers 503, not a third try.
                left_s = deadline - time.monotonic()
                log.warning(
                    "TorchServe lost the worker running request %s (%s); %s",
                    request_id,
                    response.status,
                    f"retrying once within {left_s:.1f} s" if left_s >= MIN_RETRY_S else "no time left to retry",
                )
                retried = True
                if left_s >= MIN_RETRY_S:
                    continue
            if response.status == 503 and _handler_error(response).get("code") == "busy":
                deferrals += 1  # sent again at once: it now outranks the jobs that came after it
                if deadline - time.monotonic() < MIN_RETRY_S:
                    # Sent with almost no time left, it would end as a read timeout (504) instead
                    # of the saturation it is.
                    self._stop_if_late(MIN_RETRY_S, request_id)
                continue
            if response.status == 413 and recut and len(texts) > 1 and self._learned_from(response):
                # The archive's limits are smaller than the facade assumed: cut this job to them.
                return self._recut(texts, request_id, deadline, options, version)
            if response.status != 200:
                raise self._status_error(response, request_id)
            note_served_version(response.headers.get(MODEL_VERSION_HEADER))
            body = _json_or_none(response)  # parsed once for the results and the tokens
            return _results(body, len(texts), request_id, options), _tokens(body)

    def _recut(
        self, texts: list[str], request_id: str, deadline: float, options: dict, version: str | None
    ) -> tuple[list[dict], int]:
        handler_tokens, text_tokens = self.token_limits.current()
        job_tokens = min(JOB_TOKENS, handler_tokens)
        results, counted = [], 0
        for job in job_slices(texts, job_tokens, text_tokens):
            try:
                job_results, tokens = self._job(texts[job], request_id, deadline, options, False, version)
            except TextTooManyTokensError as exc:
                raise exc.at_offset(job.start) from exc
            results.extend(job_results)
            counted += tokens
            version = version or served_version()
        return results, counted

    def _learned_from(self, response: urllib3.BaseHTTPResponse) -> bool:
        error = _handler_error(response)
        return error.get("code") == "too_many_tokens" and self.token_limits.learn(
            error.get("max_request_tokens"), error.get("max_text_tokens")
        )

    def describe(self) -> dict:
        """Return what the handler says about the model (identity, labels, token limits), or raise 503.

        A describe job on the inference API: replicas not known to be down first, until one answers
        or the ready timeout is spent.
        """
        deadline = time.monotonic() + self._ready_timeout_s
        replicas, down = self._inference.all(), self._inference.down()
        for replica in readiness_order(replicas, down, set()):
            description = self._described_by(replica, deadline)
            if description is not None:
                return description
        raise UpstreamUnavailableError(UNAVAILABLE)

    def is_ready(self) -> bool:
        """Return True when at least one TorchServe replica answers /ping and is proven.

        /ping is answered by TorchServe's frontend at once, never queued behind jobs, so a probe does
        not wait behind work under load; but it says "Healthy" while the worker still loads, so a
        replica counts only once it answered a describe job since it was found or last failed.
        """
        deadline = time.monotonic() + self._ready_timeout_s
        replicas, down, proven = self._inference.all(), self._inference.down(), self._inference.proven()
        for replica in readiness_order(replicas, down, proven):
            if not self._pinged(replica, deadline):
                continue
            if replica in proven or self._described_by(replica, deadline) is not None:
                return True
        return False

    def _pinged(self, replica: str, deadline: float) -> bool:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            return False
        try:
            response = self._pools.request(
                "GET", replica + "/ping", timeout=_timeout(self._connect_timeout, left_s), redirect=False
            )
        except HTTPError as exc:
            log.info("TorchServe at %s did not answer /ping: %s", replica, exc)
            self._inference.failed(replica)
            return False
        if response.status != 200:
            log.info("TorchServe at %s answered /ping with %s", replica, response.status)
            self._inference.failed(replica)
            return False
        return True

    def _described_by(self, replica: str, deadline: float) -> dict | None:
        """Return the description a describe job on `replica` got, or None (and the replica is not proven)."""
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            return None
        try:
            response = self._pools.request(
                "POST",
                replica + self._predict_path,
                body=b"{}",
                headers={"Content-Type": "application/json", DESCRIBE_HEADER: "1", SENDER_HEADER: self._sender},
                timeout=_timeout(self._connect_timeout, left_s),
                redirect=False,
            )
        except HTTPError as exc:
            log.info("TorchServe at %s did not answer a describe job: %s", replica, exc)
            return None
        if response.status != 200:
            log.info("TorchServe at %s answered a describe job with status %s", replica, response.status)
            return None
        try:
            description = described_model(response.json(), response.headers.get(MODEL_VERSION_HEADER))
        except ValueError as exc:
            log.info("TorchServe at %s answered a describe job with %s", replica, exc)
            return None
        self._inference.answered_describe(replica)
        return description

    def close(self) -> None:
        """Close the pooled connections; the app itself keeps one client for its whole life."""
        self._pools.clear()

    def _post(
        self,
        texts: list[str],
        request_id: str,
        read_timeout_s: float,
        options: dict | None = None,
        deferrals: int = 0,
        version: str | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """POST one job to a replica; once more to another one when the first could not have answered.

        The retry runs within the same deadline (what is left of read_timeout_s), never after a read
        timeout, and at most once: a job costs at most one extra POST, and only when the first
        replica did no work for it that the facade could still receive.
        """
        deadline = time.monotonic() + read_timeout_s
        replica, retried = self._inference.next(), False
        while True:
            try:
                left_s = deadline - time.monotonic()
                response = self._send(replica, texts, request_id, left_s, options, deferrals, version)
            except UNANSWERED as exc:
                kind, target = failure_kind(exc), None
                if not retried:
                    target = self._retry_target(kind, replica, deadline)
                if target is None:
                    raise _unreachable(kind, exc, request_id) from exc
            else:
                if retried or not _not_served(response):
                    return response
                kind, target = NOT_SERVED, self._retry_target(NOT_SERVED, replica, deadline)
                if target is None:
                    return response
            log.warning(
                "TorchServe at %s failed request %s (%s); retrying once at %s", replica, request_id, kind, target
            )
            replica, retried = target, True

    def _retry_target(self, kind: str, replica: str, deadline: float) -> str | None:
        if kind != TIMEOUT:
            self._inference.failed(replica)
        left_s = deadline - time.monotonic()
        return retry_target(kind, replica, self._inference.all(), self._inference.down(), left_s)

    def _send(
        self,
        replica: str,
        texts: list[str],
        request_id: str,
        read_timeout_s: float,
        options: dict | None,
        deferrals: int,
        version: str | None,
    ) -> urllib3.BaseHTTPResponse:
        path = f"{self._predict_path}/{quote(version, safe='')}" if version else self._predict_path
        try:
            return self._pools.request(
                "POST",
                replica + path,
                # The texts as UTF-8, as they came: escaped (ensure_ascii), every non-ASCII character
                # would grow (an emoji to 12 bytes), forwarding up to 2.5 times what the client sent.
                body=json.dumps({"texts": texts, **(options or {})}, ensure_ascii=False).encode("utf-8"),
                # Wall-clock time, since it must mean the same in the worker's process; the budget
                # (the same moment, relative) lets the handler correct a skew between the clocks.
                headers={
                    "Content-Type": "application/json",
                    "X-Request-ID": request_id,
                    DEADLINE_HEADER: f"{time.time() + read_timeout_s - DEADLINE_MARGIN_S:.3f}",
                    BUDGET_HEADER: f"{read_timeout_s - DEADLINE_MARGIN_S:.3f}",
                    SENDER_HEADER: self._sender,
                    DEFERRALS_HEADER: str(deferrals),
                    **trace_headers(),
                },
                timeout=_timeout(self._connect_timeout, read_timeout_s),
                redirect=False,
            )
        except UNANSWERED:
            raise
        except HTTPError as exc:
            raise _malformed(request_id, f"request failed: {exc}") from exc

    def _status_error(self, response: urllib3.BaseHTTPResponse, request_id: str) -> Exception:
        error = _handler_error(response)
        if response.status == 413 and error.get("code") == "too_many_tokens":
            self.token_limits.learn(error.get("max_request_tokens"), error.get("max_text_tokens"))
            return TooManyTokensError(_message(error, "The request has too many tokens; split it."))
        if response.status == 413 and error.get("code") == "text_too_many_tokens":
            return TextTooManyTokensError(
                _message(error, "A text is over the model's token limit."), error.get("index")
            )
        if response.status == 503 and error.get("code") in NOT_SERVED_CODES:
            log.info("TorchServe did not run request %s: %s", request_id, error["code"])
            return UpstreamUnavailableError(_message(error, UNAVAILABLE))
        return _status_error(response, request_id)


def _refuse_over(tokens: int, limit: int, text_tokens: int) -> None:
    if tokens > limit:
        raise TooManyTokensError(too_many_tokens_message(tokens, limit, text_tokens, at_least=True))


def _tokens(body: object) -> int:
    # What the handler counted for the job; an older handler that does not say costs nothing here.
    tokens = body.get("tokens") if isinstance(body, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else 0


def _handler_error(response: urllib3.BaseHTTPResponse) -> dict:
    # The handler's own error body: {"error": {"code", "message", ...}}; {} for anything else.
    body = _json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _message(error: dict, default: str) -> str:
    message = error.get("message")
    return message if isinstance(message, str) and 0 < len(message) <= 500 else default


def replica_pools(pool_size: int) -> urllib3.PoolManager:
    """Return connection pools that keep up to pool_size connections per TorchServe replica."""
    # urllib3 itself, not requests: less CPU per call (docs/performance.md, "The facade's HTTP client").
    # A PoolManager never takes a proxy from HTTP_PROXY and friends: TorchServe is a private backend.
    # No retries here: TorchServeClient._post retries a request that never left, on another replica;
    # with retries off, urllib3 raises the failure itself (replicas.failure_kind) and returns a
    # redirect as the answer it is.
    return urllib3.PoolManager(num_pools=POOLED_REPLICAS, maxsize=pool_size, retries=False)


def _timeout(connect_s: float, left_s: float) -> urllib3.Timeout:
    # Connecting never takes more than what is left; the answer may take all of it.
    return urllib3.Timeout(connect=min(connect_s, left_s), read=left_s)


def _unreachable(kind: str, exc: Exception, request_id: str) -> Exception:
    if kind == TIMEOUT:
        log.warning("TorchServe read timeout for request %s: %s", request_id, exc)
        return UpstreamTimeoutError(TIMED_OUT)
    log.warning(
        "TorchServe unreachable for request %s (%s): %s",
        request_id,
        "refused or no connection in time" if kind == CONNECT else "connection cut",
        exc,
    )
    return UpstreamUnavailableError(UNAVAILABLE)


def _not_served(response: urllib3.BaseHTTPResponse) -> bool:
    # 503 without a worker or with a full queue, 404 before the model is registered: TorchServe did
    # not run the job. A handler's own answer (an "error" body, or "Prediction failed") is not this.
    if response.status not in (404, 503):
        return False
    body = _json_or_none(response)
    return not (isinstance(body, dict) and ("error" in body or body.get("type") == "InternalServerException"))


def _worker_lost(response: urllib3.BaseHTTPResponse) -> bool:
    if response.status not in (500, 507):
        return False
    body = _json_or_none(response)
    return isinstance(body, dict) and body.get("message") in WORKER_LOST_MESSAGES


def _status_error(response: urllib3.BaseHTTPResponse, request_id: str) -> Exception:
    if _worker_lost(response):
        log.warning("TorchServe lost the worker running request %s; answering 503", request_id)
        return UpstreamUnavailableError(UNAVAILABLE)
    body = _json_or_none(response)
    # These pass once TorchServe catches up, unlike a handler that failed or rejected the input.
    if _not_served(response):
        log.warning("TorchServe answered %s for request %s: %s", response.status, request_id, _summary(body))
        return UpstreamUnavailableError(UNAVAILABLE)
    return _malformed(request_id, f"status {response.status}: {_summary(body)}")


def _results(body: object, expected: int, request_id: str, options: dict) -> list[dict]:
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


def _json_or_none(response: urllib3.BaseHTTPResponse) -> object:
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
