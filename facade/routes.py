"""The public routes: classify as JSON or from the page's form, health, readiness, API description."""

import secrets

from flask import Blueprint, g, jsonify, render_template, request
from werkzeug.exceptions import NotFound, RequestEntityTooLarge

from facade import compat
from facade.context import api_keys_on, metrics, model_info, predictor, request_id, settings
from facade.errors import MissingTextError, ServiceError, UnsupportedMediaTypeError, UpstreamUnavailableError
from facade.info import MODEL_VERSION_HEADER, info_body
from facade.observability import classify as classify_texts
from facade.openapi import openapi_spec
from facade.options import classify_options
from facade.validation import checked_text, classify_payload, json_object

bp = Blueprint("facade", __name__)

FORM = "application/x-www-form-urlencoded"
# nginx sets these on everything it proxies; /metrics is for scrapers on the private side only.
PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP")


def page_csp(nonce: str) -> str:
    """Return the page's policy: nothing loads from anywhere; only its own inline script runs and calls back here."""
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; "
        "style-src 'unsafe-inline'; "
        "connect-src 'self'; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )


@bp.after_app_request
def identify_response(response):
    """Stamp every response, errors included, with who served it and for which request."""
    response.headers["X-Container-ID"] = settings().container_id
    response.headers["X-Request-ID"] = request_id()
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", str(settings().retry_after_s))
    if g.get("model_version"):
        response.headers[MODEL_VERSION_HEADER] = g.model_version
    return response


@bp.get("/")
def index():
    """Return the page with the form to try a sentence."""
    return page()


@bp.post("/")
def classify():
    """Return the sentiment of "text" or of each of "texts" (JSON), or the page for a form post."""
    if request.mimetype == FORM:
        return classified_form()
    _require_json()
    body = request.get_data(cache=False)
    _reject_cut_off_body()
    payload = json_object(body)
    if compat.is_inference_request(payload):
        return hf_inference(payload)
    texts, single, options = classify_payload(payload, settings())
    results = classify_texts(texts, options)
    body = results[0] if single else {"results": results}
    return jsonify({**body, "container_id": settings().container_id})


def hf_inference(payload: dict):
    """Return Hugging Face's text-classification answer to its inference request shape (facade/compat.py)."""
    texts, _ = compat.inference_inputs(payload, settings())
    options, top_k = compat.hf_options(payload, settings())
    return jsonify(compat.hf_answer(classify_texts(texts, options), top_k))


@bp.post("/predict")
def tei_predict():
    """Return text-embeddings-inference's /predict answer: every label's score, per text (facade/compat.py)."""
    _require_json()
    body = request.get_data(cache=False)
    _reject_cut_off_body()
    payload = json_object(body)
    texts, single = compat.inference_inputs(payload, settings())
    options = compat.tei_options(payload, settings())
    results = classify_texts(texts, options)
    return jsonify(compat.tei_answer(results, single, options["raw_scores"]))


@bp.get("/healthz")
def healthz():
    """Return 200 while the process serves; it never asks TorchServe."""
    return jsonify({"status": "ok", "container_id": settings().container_id})


@bp.get("/readyz")
def readyz():
    """Return 200 when TorchServe has a READY worker for the model, else a 503 error."""
    if not predictor().is_ready():
        raise UpstreamUnavailableError(
            f"TorchServe has no READY worker for model {settings().model_name!r} yet; "
            f"retry in {settings().retry_after_s} s."
        )
    return jsonify({"status": "ready", "container_id": settings().container_id})


@bp.get("/info")
def info():
    """Return the model's identity (id, revision, archive version, runtime, labels) and every limit."""
    model = model_info().current(predictor())
    g.model_version = model.get("archive_version")
    return jsonify({**info_body(settings(), model), "container_id": settings().container_id})


@bp.get("/openapi.json")
def openapi():
    """Return the OpenAPI 3.0 description of this API."""
    return jsonify(openapi_spec(settings()))


@bp.get("/metrics")
def prometheus_metrics():
    """Return the Prometheus metrics of every worker of this instance; 404 when asked through a proxy."""
    # nginx does not route /metrics at all; refusing proxied requests keeps it private even if it ever did.
    if any(name in request.headers for name in PROXY_HEADERS):
        raise NotFound()
    body, content_type = metrics().exposition()
    return body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"}


def classified_form():
    """Return the page with the form's text classified, or with what to change about it."""
    text = ""
    try:
        text = request.form.get("text")
        _reject_cut_off_body()
        if text is None:
            raise MissingTextError("Type a sentence in the box, then press Classify.")
        options = classify_options({}, settings().default_truncation)
        result = classify_texts([checked_text(text, "The text", settings())], options)[0]
    except RequestEntityTooLarge:
        g.error_code = "payload_too_large"
        limit = settings().max_body_bytes
        return page(error=f"The text is too long to send (over {limit} bytes); shorten it.", status=413)
    except ServiceError as exc:
        g.error_code = exc.code
        return page(text=text or "", error=exc.message, status=exc.status)
    return page(text=text, result=result)


def page(text: str = "", result: dict | None = None, error: str | None = None, status: int = 200):
    """Return the HTML page, showing a result or an error when there is one."""
    nonce = secrets.token_urlsafe(18)
    html = render_template(
        "index.html",
        container_id=settings().container_id,
        request_id=request_id(),
        max_text_chars=settings().max_text_chars,
        text=text,
        result=result,
        error=error,
        nonce=nonce,
        api_key_field=api_keys_on(),
    )
    # A fresh nonce per response: a cached copy would replay it.
    return html, status, {"Content-Security-Policy": page_csp(nonce), "Cache-Control": "no-store"}


def _reject_cut_off_body() -> None:
    # Werkzeug stops reading a chunked body at MAX_CONTENT_LENGTH without complaint and hands
    # over the first bytes; a body that filled the limit is treated as one that went past it.
    if request.content_length is None and getattr(request.stream, "is_exhausted", False):
        raise RequestEntityTooLarge()


def _require_json() -> None:
    if request.mimetype != "application/json":
        sent = f"Content-Type {request.mimetype} is not supported" if request.mimetype else "No Content-Type"
        raise UnsupportedMediaTypeError(
            f"{sent}; send JSON with Content-Type: application/json (or the page's form as {FORM})."
        )
    if request.mimetype_params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError("Send JSON encoded as UTF-8 (charset=utf-8, or no charset).")
