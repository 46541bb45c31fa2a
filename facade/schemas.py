"""JSON Schemas of the request and response bodies, for the OpenAPI document."""

from facade.errors import error_codes_by_status
from facade.settings import SAFE_ID, TRUNCATION_MODES, Settings

SAFE_ID_SCHEMA = {"type": "string", "pattern": f"^{SAFE_ID.pattern}$"}
CONTAINER_ID = {**SAFE_ID_SCHEMA, "description": "The container (or host-port) that served the request."}
RESULT = {
    "label": {"type": "string", "minLength": 1, "example": "POSITIVE"},
    "score": {"type": "number", "minimum": 0, "maximum": 1, "example": 0.9998},
    "truncated": {
        "type": "boolean",
        "enum": [True],
        "description": "Present when part of a long text was not read (which part: the request's truncation).",
    },
    "windows": {
        "type": "integer",
        "minimum": 1,
        "description": 'With truncation "window": how many overlapping windows were classified and averaged.',
    },
    "scores": {
        "type": "array",
        "minItems": 1,
        "description": 'With "all_scores": true: every label with its score, best first; the scores sum to 1.',
        "items": {
            "type": "object",
            "required": ["label", "score"],
            "properties": {
                "label": {"type": "string", "minLength": 1},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "additionalProperties": False,
        },
    },
}
OPTIONAL_RESULT_FIELDS = ("truncated", "windows", "scores")
OPTIONS = {
    "all_scores": {
        "type": "boolean",
        "default": False,
        "description": 'true: also answer every label with its score ("scores"), best first.',
    },
    "truncation": {
        "type": "string",
        "enum": list(TRUNCATION_MODES),
        "description": "What of a text over the model's token limit is classified: right keeps the start, left "
        "the end, head_tail a quarter from the start and the rest from the end; error refuses it (413 "
        "text_too_many_tokens, with its token count); window classifies overlapping windows over the whole text "
        "and averages their probabilities (each window counts in the token limits). Default: GET /info's "
        "truncation.default.",
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
    single = {"type": "object", "required": ["text"], "properties": {"text": text, **OPTIONS}}
    batch = {"type": "object", "required": ["texts"], "properties": {"texts": texts, **OPTIONS}}
    form = {"type": "object", "required": ["text"], "properties": {"text": text}}
    return {
        "application/json": {
            "schema": {
                "oneOf": [
                    {**single, "not": {"required": ["texts"]}},
                    {**batch, "not": {"required": ["text"]}},
                    hf_inference_request(settings),
                ]
            }
        },
        "application/x-www-form-urlencoded": {"schema": form},
    }


def classify_result(settings: Settings) -> dict:
    """Return the schema of POST /'s JSON success body for either request form."""
    single = closed_object({**RESULT, "container_id": CONTAINER_ID}, optional=OPTIONAL_RESULT_FIELDS)
    results = {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.max_texts,
        "items": closed_object(RESULT, optional=OPTIONAL_RESULT_FIELDS),
    }
    hf_answer = {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.max_texts,
        "description": "To a body with inputs (Hugging Face's inference shape): per text, its labels best first.",
        "items": scored_labels(),
    }
    return {"oneOf": [single, closed_object({"results": results, "container_id": CONTAINER_ID}), hf_answer]}


def inputs_schema(settings: Settings) -> dict:
    """Return the schema of `inputs`: one text, or a list of 1 to max_texts texts."""
    text = {"type": "string", "minLength": 1, "maxLength": settings.max_text_chars, "pattern": r"\S"}
    texts = {"type": "array", "minItems": 1, "maxItems": settings.max_texts, "items": text}
    return {"oneOf": [text, texts], "example": "It is worth it"}


def hf_inference_request(settings: Settings) -> dict:
    """Return the schema of Hugging Face's inference request (InferenceClient.text_classification)."""
    parameters = {
        "type": "object",
        "nullable": True,
        "properties": {
            "top_k": {"type": "integer", "minimum": 1, "nullable": True},
            # OpenAPI 3.0: a nullable enum lists null among its values.
            "function_to_apply": {"type": "string", "enum": ["softmax", None], "nullable": True},
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {"inputs": inputs_schema(settings), "parameters": parameters},
        "not": {"anyOf": [{"required": ["text"]}, {"required": ["texts"]}]},
        "description": "Hugging Face's inference shape (huggingface_hub.InferenceClient): answered with a list "
        "of {label, score} lists.",
    }


def scored_labels(bounded: bool = True) -> dict:
    """Return the schema of every label with its score, best first."""
    score = {"type": "number", "minimum": 0, "maximum": 1} if bounded else {"type": "number"}
    entry = closed_object({"label": {"type": "string", "minLength": 1}, "score": score})
    return {"type": "array", "minItems": 1, "items": entry}


def tei_predict_request(settings: Settings) -> dict:
    """Return the schema of text-embeddings-inference's POST /predict body."""
    properties = {
        "inputs": inputs_schema(settings),
        "raw_scores": {"type": "boolean", "default": False, "description": "true: the logits as scores."},
        "truncate": {
            "type": "boolean",
            "nullable": True,
            "description": "false: a text over the model's limit gets 413 text_too_many_tokens; true: it is cut "
            "(truncation_direction); absent: the service's default truncation.",
        },
        "truncation_direction": {"type": "string", "enum": ["Right", "Left", "right", "left"], "default": "Right"},
    }
    return {"type": "object", "required": ["inputs"], "properties": properties}


def tei_predict_result(settings: Settings) -> dict:
    """Return the schema of POST /predict's answer: one text's labels, or a list of them."""
    labels = scored_labels(bounded=False)
    many = {"type": "array", "minItems": 1, "maxItems": settings.max_texts, "items": labels}
    return {"oneOf": [labels, many]}


def precision_choice() -> dict:
    """Return the schema of PRECISION=auto's decision in GET /info (null: a fixed precision was built)."""
    text = {"type": "string"}
    share = {"type": "number", "minimum": 0, "maximum": 1}
    choice = closed_object(
        {
            "requested": {**text, "enum": ["auto"]},
            "precision": {**text, "enum": ["int8", "fp32"]},
            "reason": {**text, "example": "int8 with layer 1 in fp32: 9 of 1200 labels flip (0.75 %), ..."},
            "sample": {**text, "description": "The texts int8 was checked on."},
            "sentences": {"type": "integer", "minimum": 0},
            "flip_rate": {**share, "description": "Share of the sample's labels int8 changed."},
            "max_score_change": {**share, "description": "Largest change of a score, int8 against fp32."},
            "max_flip_rate": {**share, "description": "The share allowed (MAX_FLIP_RATE at make mar)."},
            "fp32_layers": {"type": "array", "items": {"type": "integer"}, "description": "Layers kept in fp32."},
        },
        optional=("sample", "sentences", "flip_rate", "max_score_change", "max_flip_rate", "fp32_layers"),
    )
    return {**choice, "nullable": True, "description": "How PRECISION=auto chose the precision (null: fixed)."}


def info_body(settings: Settings) -> dict:
    """Return the schema of GET /info's body."""
    text = {"type": "string"}
    count = {"type": "integer", "minimum": 0, "nullable": True}
    model = closed_object(
        {
            "name": {"type": "string", "example": settings.model_name},
            "id": {**text, "description": "The hub model id, or the local model folder's name."},
            "revision": {**text, "description": "The hub revision the archive was built from."},
            "archive_version": {**text, "description": "Derived from everything packed; sent as X-Model-Version."},
            "runtime": {**text, "example": "onnx"},
            "precision": {**text, "example": "fp32"},
            "labels": {"type": "array", "items": text},
            "precision_choice": precision_choice(),
        }
    )
    limits = closed_object(
        {
            "max_texts": {"type": "integer", "minimum": 1, "example": settings.max_texts},
            "max_text_chars": {"type": "integer", "minimum": 1, "example": settings.max_text_chars},
            "max_body_bytes": {"type": "integer", "minimum": 1, "example": settings.max_body_bytes},
            "max_text_tokens": {**count, "description": "Tokens the model reads of one text (or one window)."},
            "max_request_tokens": {**count, "description": "Tokens one request may cost (0: no limit)."},
            "max_windows": {**count, "description": 'Windows per text under truncation "window".'},
            "timeout_s": {"type": "number", "description": "How long the service waits for the model."},
        }
    )
    truncation = closed_object(
        {
            "default": {"type": "string", "enum": list(TRUNCATION_MODES)},
            "modes": {"type": "array", "items": {"type": "string", "enum": list(TRUNCATION_MODES)}},
        }
    )
    return closed_object({"model": model, "limits": limits, "truncation": truncation, "container_id": CONTAINER_ID})
