"""JSON Schemas of the request and response bodies, for the OpenAPI document."""

from facade.errors import error_codes_by_status
from facade.settings import SAFE_ID, Settings

SAFE_ID_SCHEMA = {"type": "string", "pattern": f"^{SAFE_ID.pattern}$"}
CONTAINER_ID = {**SAFE_ID_SCHEMA, "description": "The container (or host-port) that served the request."}
RESULT = {
    "label": {"type": "string", "minLength": 1, "example": "POSITIVE"},
    "score": {"type": "number", "minimum": 0, "maximum": 1, "example": 0.9998},
    "truncated": {
        "type": "boolean",
        "enum": [True],
        "description": "Present when only the start of a long text was classified.",
    },
}


def closed_object(properties: dict, optional: tuple[str, ...] = ()) -> dict:
    """Return an object schema with exactly these properties, all required but the optional ones."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def status_body(status: str) -> dict:
    """Return the schema of /healthz's and /readyz's success body."""
    return closed_object({"status": {"type": "string", "enum": [status]}, "container_id": CONTAINER_ID})


def error_body(status: int) -> dict:
    """Return the schema of the JSON error body for one HTTP status, listing its possible codes."""
    codes = {"type": "string", "enum": error_codes_by_status()[status]}
    error = closed_object({"code": codes, "message": {"type": "string"}})
    return closed_object({"error": error, "container_id": CONTAINER_ID})


def classify_request(settings: Settings) -> dict:
    """Return the request body media types POST / takes; unknown JSON fields are ignored, so allowed."""
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "pattern": r"\S",
        "description": "Not only whitespace, and valid Unicode (no unpaired surrogates such as \\ud800).",
        "example": "It is worth it",
    }
    texts = {"type": "array", "minItems": 1, "maxItems": settings.max_texts, "items": text}
    single = {"type": "object", "required": ["text"], "properties": {"text": text}}
    batch = {"type": "object", "required": ["texts"], "properties": {"texts": texts}}
    return {
        "application/json": {
            "schema": {
                "oneOf": [
                    {**single, "not": {"required": ["texts"]}},
                    {**batch, "not": {"required": ["text"]}},
                ]
            }
        },
        "application/x-www-form-urlencoded": {"schema": single},
    }


def classify_result(settings: Settings) -> dict:
    """Return the schema of POST /'s JSON success body for either request form."""
    single = closed_object({**RESULT, "container_id": CONTAINER_ID}, optional=("truncated",))
    results = {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.max_texts,
        "items": closed_object(RESULT, optional=("truncated",)),
    }
    return {"oneOf": [single, closed_object({"results": results, "container_id": CONTAINER_ID})]}
