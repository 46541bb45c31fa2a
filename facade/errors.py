"""The errors the facade answers with, and the one JSON shape every error response takes."""

import logging

from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from facade.context import request_id, settings

log = logging.getLogger(__name__)

# Werkzeug raises these itself (routing, body limits); they get codes like our own errors.
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}


class ServiceError(Exception):
    """An error a client can act on: an HTTP status, a stable code and a message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RequestError(ServiceError):
    status = 400


class InvalidJsonError(RequestError):
    code = "invalid_json"


class MissingTextError(RequestError):
    code = "missing_text"


class ConflictingFieldsError(RequestError):
    code = "conflicting_fields"


class InvalidTextTypeError(RequestError):
    code = "invalid_text_type"


class EmptyTextError(RequestError):
    code = "empty_text"


class EmptyTextsError(RequestError):
    code = "empty_texts"


class TooManyTextsError(RequestError):
    code = "too_many_texts"


class TextTooLongError(RequestError):
    code = "text_too_long"


class InvalidTextError(RequestError):
    code = "invalid_text"


class InvalidOptionError(RequestError):
    code = "invalid_option"


class UnauthorizedError(ServiceError):
    status = 401
    code = "unauthorized"


class TooManyTokensError(ServiceError):
    status = 413
    code = "too_many_tokens"


class TextTooManyTokensError(ServiceError):
    status = 413
    code = "text_too_many_tokens"

    def __init__(self, message: str, index: object = None):
        super().__init__(message)
        self.index = index if isinstance(index, int) and not isinstance(index, bool) else None

    def at_offset(self, offset: int) -> "TextTooManyTokensError":
        """Return the error of a text found in a job that starts at `offset` of the client's request.

        The handler numbers the texts of the job it got; the client knows those of its request.
        """
        if self.index is None or not offset:
            return self
        index = self.index + offset
        message = self.message.replace(f"Text {self.index} has", f"Text {index} has", 1)
        return TextTooManyTokensError(message, index)


class SaturatedError(ServiceError):
    """New work turned away at once: the queue is longer than can be served before the deadline."""

    status = 429
    code = "saturated"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnsupportedMediaTypeError(ServiceError):
    status = 415
    code = "unsupported_media_type"


class UpstreamError(ServiceError):
    status = 502
    code = "backend_error"


class UpstreamUnavailableError(ServiceError):
    status = 503
    code = "backend_unavailable"


class UpstreamSaturatedError(UpstreamUnavailableError):
    """A request stopped between its jobs: the rest could not be served before its deadline."""

    code = "over_deadline"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamTimeoutError(ServiceError):
    status = 504
    code = "backend_timeout"


def error_codes_by_status() -> dict[int, list[str]]:
    """Return every error code the facade can answer with, grouped by HTTP status."""
    codes: dict[int, list[str]] = {}
    pending = list(ServiceError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if "code" in vars(cls):
            codes.setdefault(cls.status, []).append(cls.code)
    for status, code in HTTP_ERROR_CODES.items():
        codes.setdefault(status, [])
        if code not in codes[status]:
            codes[status].append(code)
    return dict(sorted(codes.items()))


def error_response(status: int, code: str, message: str):
    """Return the JSON error response every error path uses."""
    g.error_code = code  # for the request's log line
    body = {"error": {"code": code, "message": message}, "container_id": settings().container_id}
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    """Answer every exception with the JSON error shape, never an HTML page or a bare 500."""
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def _service_error(exc: ServiceError):
    response, status = error_response(exc.status, exc.code, exc.message)
    if getattr(exc, "retry_after_s", None) is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response, status


def _http_error(exc: HTTPException):
    if exc.code is None or exc.code < 400:
        return exc  # redirects and the like are not errors
    if exc.code == 500:
        return _unexpected_error(getattr(exc, "original_exception", None) or exc)
    code = HTTP_ERROR_CODES.get(exc.code, f"http_{exc.code}")
    response, status = error_response(exc.code, code, _http_message(exc))
    if exc.code == 405:
        # The Allow header is what tells the client which methods would work.
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods or ()))
    return response, status


def _http_message(exc: HTTPException) -> str:
    if exc.code == 404:
        return "Nothing is at this path: POST / classifies text; GET /openapi.json lists every route."
    if exc.code == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        return f"{request.method} is not allowed on {request.path}; use one of: {allowed}."
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return f"The request body is over {limit} bytes; send fewer or shorter texts."
    if exc.code == 415:
        return "Send the body as application/json."
    if exc.code == 400:
        return 'The request could not be read; send a JSON object such as {"text": "I like it"}.'
    return exc.description or exc.name


def _unexpected_error(exc: BaseException):
    log.error("Unhandled error answering request %s", request_id(), exc_info=exc)
    message = f"Something went wrong on our side; it was logged with request ID {request_id()}. Retry later."
    return error_response(500, "internal_error", message)
