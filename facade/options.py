"""The options of a classify request (every label's score, what of a long text is read), and what they add to a result.

The handler reads the same options (handler/sentiment_requests.py, sentiment_truncation.py) and
is the authority on what they do; the facade checks them first so that a bad value gets the
API's 400, and passes them on. tests/unit/test_request_contract.py keeps both lists equal.
"""

import math

from facade.errors import InvalidOptionError
from facade.settings import TRUNCATION_MODES

ALL_SCORES = "all_scores"
TRUNCATION = "truncation"


def classify_options(payload: dict, default_truncation: str) -> dict:
    """Return the options to send to the handler: all_scores and truncation, defaults filled in."""
    all_scores = payload.get(ALL_SCORES, False)
    if not isinstance(all_scores, bool):
        raise InvalidOptionError(f'"{ALL_SCORES}" must be true or false.')
    truncation = payload.get(TRUNCATION, default_truncation)
    if not isinstance(truncation, str) or truncation not in TRUNCATION_MODES:
        raise InvalidOptionError(f'"{TRUNCATION}" must be one of: {", ".join(TRUNCATION_MODES)}.')
    return {ALL_SCORES: all_scores, TRUNCATION: truncation}


def result_extras(item: dict, options: dict) -> dict | None:
    """Return the fields the request's options add to a handler's result, or None if one is malformed.

    Only what was asked for passes: "scores" (all_scores), "logits" (raw_scores), "windows"
    (truncation "window"); anything else the handler sends stays private.
    """
    extras = {}
    if options.get(ALL_SCORES) and "scores" in item:
        scores = item["scores"]
        if not isinstance(scores, list) or not all(_is_scored_label(entry) for entry in scores):
            return None
        extras["scores"] = [{"label": entry["label"], "score": float(entry["score"])} for entry in scores]
    if options.get("raw_scores") and "logits" in item:
        logits = item["logits"]
        if not isinstance(logits, dict) or not all(_is_finite_number(value) for value in logits.values()):
            return None
        extras["logits"] = {str(label): float(value) for label, value in logits.items()}
    if options.get(TRUNCATION) == "window" and "windows" in item:
        windows = item["windows"]
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
            return None
        extras["windows"] = windows
    return extras


def _is_finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _is_scored_label(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("label"), str) or not entry["label"]:
        return False
    score = entry.get("score")
    return not isinstance(score, bool) and isinstance(score, int | float) and 0 <= score <= 1
