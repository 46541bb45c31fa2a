"""The OpenAPI 3.0 document served at /openapi.json, with this instance's limits filled in."""

from facade import schemas
from facade.docs import ASSETS as DOCS_ASSETS
from facade.settings import Settings

DESCRIPTIONS = {
    400: "The body is not what the API takes (invalid_option: all_scores or truncation); the message says what "
    "to change.",
    401: "API keys are on and the request has no Authorization: Bearer <key>, or an unknown key.",
    404: "No route at this path.",
    405: "The path exists, but not for this method; Allow lists the methods it takes.",
    413: "The request body is over the size limit (payload_too_large), or its texts come to more tokens than "
    "one request may (too_many_tokens: the model's cost limit; the message states the limit, the request's "
    "count and into how many requests to split it), or a text is over the model's token limit under truncation "
    '"error" (text_too_many_tokens: the message states its token count).',
    415: "The body is not JSON (nor, on POST /, the page's form).",
    429: "saturated: the service is saturated and turns requests of more than one job away at once, before any "
    "of their work is done (light requests are still served); retry after Retry-After s (docs/overload.md).",
    500: "An unexpected error, logged with the request ID.",
    502: "TorchServe gave an answer the facade did not expect.",
    503: "TorchServe is down, starting, has no READY worker or a full queue, or lost the worker running "
    "the request twice; or the model is busy with heavier requests, or the request waited in its queue until "
    "the facade would no longer wait for it (answered at once, not run); or (over_deadline) the request was "
    "stopped between its jobs because the rest could not be served before its deadline; retry after Retry-After s.",
    504: "TorchServe did not answer within the read timeout.",
}
HTML = {"text/html": {"schema": {"type": "string"}}}
JAVASCRIPT = {"text/javascript": {"schema": {"type": "string"}}}
DOC_ASSETS = sorted(DOCS_ASSETS)
ASSETS = {
    "text/css": {"schema": {"type": "string"}},
    **JAVASCRIPT,
    "image/png": {"schema": {"type": "string", "format": "binary"}},
}
PROMETHEUS = {"text/plain; version=0.0.4": {"schema": {"type": "string"}}}


def openapi_spec(settings: Settings) -> dict:
    """Return the OpenAPI document describing every route, body, status and header of the facade."""
    classified = _response(200, "The sentiment of each text.", schemas.classify_result(settings), html=True)
    # The page's form gets the page back, with the error in words, instead of JSON.
    errors = {status: _error(status, html=status != 415) for status in (400, 413, 415, 429, 502, 503, 504)}
    classify = {
        **_operation("classify", "Classify one text, or a list of texts.", {200: classified, **errors}),
        "requestBody": {"required": True, "content": schemas.classify_request(settings)},
    }
    page = {**_response(200, "The page: container ID and a form to try a sentence."), "content": HTML}
    paths = {
        "/": {"get": _operation("index", "The HTML page.", {200: page}), "post": classify},
        "/healthz": {"get": _operation("healthz", "Liveness: 200 while the process serves.", _status("ok"))},
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness: 200 when TorchServe has a READY worker for the model.",
                {**_status("ready"), 503: _error(503)},
            )
        },
        "/info": {
            "get": _operation(
                "info",
                "The model (id, revision, archive version, runtime, precision and how auto chose it, labels) "
                "and every limit a client must respect: texts per request, characters, tokens, timeout; "
                "the truncation modes.",
                {200: _response(200, "The model and its limits.", schemas.info_body(settings)), 503: _error(503)},
            )
        },
        "/predict": {
            "post": {
                **_operation(
                    "predict",
                    "text-embeddings-inference's /predict: every label's score per text (inputs, raw_scores, "
                    "truncate, truncation_direction).",
                    {
                        200: _response(200, "Per text, every label best first.", schemas.tei_predict_result(settings)),
                        **{status: _error(status) for status in (400, 413, 415, 502, 503, 504)},
                    },
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": schemas.tei_predict_request(settings)}},
                },
            }
        },
        "/docs": {
            "get": _operation(
                "docs",
                "This document rendered by Swagger UI, served here (no CDN).",
                {200: {**_response(200, "The Swagger UI page."), "content": HTML}},
            )
        },
        "/docs/init.js": {
            "get": _operation(
                "docsInit",
                "The script that starts Swagger UI on this document.",
                {200: {**_response(200, "JavaScript."), "content": JAVASCRIPT}},
            )
        },
        "/docs/{name}": {
            "get": {
                **_operation(
                    "docsAsset",
                    "An asset of Swagger UI (its script, stylesheet, icons); 404 for any other name.",
                    {200: {**_response(200, "The asset."), "content": ASSETS}, 404: _error(404)},
                ),
                "parameters": [
                    {"$ref": "#/components/parameters/X-Request-ID"},
                    {"$ref": "#/components/parameters/traceparent"},
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": DOC_ASSETS}},
                ],
            }
        },
        "/openapi.json": {
            "get": _operation("openapi", "This document.", {200: _response(200, "OpenAPI 3.0.", {"type": "object"})})
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics of this instance (all its workers). Only on the facade's own port: "
                "nginx does not route it, and a request carrying X-Forwarded-For or X-Real-IP gets 404.",
                {200: {**_response(200, "Prometheus text format 0.0.4."), "content": PROMETHEUS}, 404: _error(404)},
            )
        },
    }
    for operations in paths.values():
        if "get" in operations:
            operations["head"] = _head_of(operations["get"])
    if settings.api_keys_file:
        for operation in (paths["/"]["post"], paths["/predict"]["post"]):
            operation["security"] = [{"apiKey": []}]
            operation["responses"]["401"] = _error(401)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Sentiment analysis",
            "version": "1.0.0",
            "description": "Classifies English text as POSITIVE or NEGATIVE. Every error is JSON, "
            '{"error": {"code": ..., "message": ...}, "container_id": ...}, except that a form post to / '
            "gets the HTML page back with the error in words.",
        },
        "paths": paths,
        "components": _components(),
    }


def _operation(operation_id: str, summary: str, responses: dict) -> dict:
    # Any route can hit the catch-all 500.
    responses = {str(status): response for status, response in {**responses, 500: _error(500)}.items()}
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [
            {"$ref": "#/components/parameters/X-Request-ID"},
            {"$ref": "#/components/parameters/traceparent"},
        ],
        "responses": responses,
    }


def _head_of(get: dict) -> dict:
    # Flask answers HEAD wherever it answers GET: same statuses and headers, no body.
    responses = {status: _without_content(response) for status, response in get["responses"].items()}
    return {**get, "operationId": get["operationId"] + "Head", "responses": responses}


def _without_content(response: dict) -> dict:
    return {key: value for key, value in response.items() if key != "content"}


def _response(status: int, description: str, schema: dict | None = None, html: bool = False) -> dict:
    response = {"description": description, "headers": _headers(status)}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    if html:
        response["content"].update(HTML)
    return response


def _status(status: str) -> dict:
    return {200: _response(200, f'{{"status": "{status}"}}', schemas.status_body(status))}


def _error(status: int, html: bool = False) -> dict:
    return _response(status, DESCRIPTIONS[status], schemas.error_body(status), html=html)


def _headers(status: int) -> dict:
    names = ["X-Container-ID", "X-Request-ID"]
    names += ["Retry-After"] if status in (429, 503) else ["Allow"] if status == 405 else []
    names += ["X-Model-Version"] if status == 200 else []
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _components() -> dict:
    safe_id = {"required": True, "schema": schemas.SAFE_ID_SCHEMA}
    request_id = {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "Echoed, and forwarded to TorchServe, when it is 1-128 of A-Z a-z 0-9 . _ : - ; "
        "any other value is replaced by a new ID.",
        "schema": {"type": "string"},
    }
    return {
        # Used by the classification routes when API keys are on (Swagger UI's Authorize takes the key).
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        "parameters": {
            "X-Request-ID": request_id,
            "traceparent": {
                "name": "traceparent",
                "in": "header",
                "required": False,
                "description": "W3C Trace Context: passed on to TorchServe, its trace ID logged; the facade's spans "
                "join this trace when FACADE_OTLP_ENDPOINT is set. A malformed value is ignored.",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "X-Container-ID": {**safe_id, "description": "The container (or host-port) that served it."},
            "X-Request-ID": {**safe_id, "description": "The client's valid X-Request-ID, or a new one."},
            "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0}},
            "Allow": {"required": True, "schema": {"type": "string"}},
            # Not required: only answers the model produced (classifications, /info) carry it.
            "X-Model-Version": {
                "required": False,
                "schema": {"type": "string"},
                "description": "The archive version of the model that produced the answer (GET /info).",
            },
        },
        # No documented operation answers these, but any other path or method does.
        "responses": {"NotFound": _error(404), "MethodNotAllowed": _error(405)},
    }
