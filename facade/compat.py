"""The request and answer shapes of clients people already have, on top of the service's own.

Hugging Face's hosted inference (what `huggingface_hub.InferenceClient(base_url=...)` or
`InferenceClient(model=<url>)` sends for text_classification): POST `{"inputs": text or [texts],
"parameters": {"top_k", "function_to_apply"}}` to the URL, answer a list of `{label, score}`
lists, every label best first. It is served on POST / when a body has `inputs` and neither
`text` nor `texts`: the seed's contract on those stays exactly as it is.

text-embeddings-inference's POST /predict: `{"inputs": text or [texts], "raw_scores",
"truncate", "truncation_direction"}`, answered `[{label, score}, ...]` for one text and a list of
those for several. `raw_scores: true` gives the logits as scores, as TEI does. TEI refuses a
text over the model's limit unless `truncate` is true: `truncate: false` is truncation "error",
`true` cuts at `truncation_direction` (Right: keep the start; Left: keep the end); without
`truncate` the service's default applies.
"""

from facade.errors import InvalidOptionError, InvalidTextTypeError, MissingTextError
from facade.settings import Settings
from facade.validation import checked_text, checked_texts

INPUTS = "inputs"
# What function_to_apply may be: the scores are a softmax over the labels (one label per text).
FUNCTIONS = ("softmax", None)
DIRECTIONS = {"right": "right", "left": "left"}


def is_inference_request(payload: dict) -> bool:
    """Return True for a body in Hugging Face's inference shape (inputs, and not the service's own fields)."""
    return INPUTS in payload and "text" not in payload and "texts" not in payload


def inference_inputs(payload: dict, settings: Settings) -> tuple[list[str], bool]:
    """Return the texts of `inputs` (one string or a list of them), and whether it was one string."""
    inputs = payload.get(INPUTS)
    if inputs is None:
        raise MissingTextError(f'"{INPUTS}" is null; send a string or a list of strings.')
    if isinstance(inputs, str):
        return [checked_text(inputs, f'"{INPUTS}"', settings)], True
    if isinstance(inputs, list):
        return checked_texts(inputs, f'"{INPUTS}"', settings), False
    raise InvalidTextTypeError(f'"{INPUTS}" must be a string or a list of strings.')


def hf_options(payload: dict, settings: Settings) -> tuple[dict, int | None]:
    """Return the options to classify a Hugging Face inference request with, and its top_k (None: every label)."""
    parameters = payload.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidOptionError('"parameters" must be an object.')
    function = parameters.get("function_to_apply")
    if function not in FUNCTIONS:
        raise InvalidOptionError('"parameters.function_to_apply" must be "softmax": the model has one label per text.')
    top_k = parameters.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidOptionError('"parameters.top_k" must be a whole number of at least 1.')
    return {"all_scores": True, "truncation": settings.default_truncation}, top_k


def hf_answer(results: list[dict], top_k: int | None) -> list[list[dict]]:
    """Return Hugging Face's text-classification answer: per text, its labels best first (the first top_k)."""
    return [result["scores"][:top_k] for result in results]


def tei_options(payload: dict, settings: Settings) -> dict:
    """Return the options to classify a TEI /predict request with."""
    raw_scores = payload.get("raw_scores", False)
    if not isinstance(raw_scores, bool):
        raise InvalidOptionError('"raw_scores" must be true or false.')
    truncate = payload.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise InvalidOptionError('"truncate" must be true or false.')
    direction = payload.get("truncation_direction", "Right")
    if not isinstance(direction, str) or direction.lower() not in DIRECTIONS:
        raise InvalidOptionError('"truncation_direction" must be "Right" or "Left".')
    truncation = settings.default_truncation
    if truncate is not None:
        truncation = DIRECTIONS[direction.lower()] if truncate else "error"
    return {"all_scores": True, "raw_scores": raw_scores, "truncation": truncation}


def tei_answer(results: list[dict], single: bool, labels_of_logits: bool) -> list:
    """Return TEI's /predict answer: per text its labels best first, scored by probability or logit."""
    answers = [_raw_scores(result) if labels_of_logits else result["scores"] for result in results]
    return answers[0] if single else answers


def _raw_scores(result: dict) -> list[dict]:
    ranked = sorted(result["logits"].items(), key=lambda pair: -pair[1])
    return [{"label": label, "score": logit} for label, logit in ranked]
