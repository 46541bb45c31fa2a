"""Turn a request body into the texts to classify, or say exactly what the client must change."""

import json

from facade.errors import (
    ConflictingFieldsError,
    EmptyTextError,
    EmptyTextsError,
    InvalidJsonError,
    InvalidTextError,
    InvalidTextTypeError,
    MissingTextError,
    TextTooLongError,
    TooManyTextsError,
)
from facade.options import classify_options
from facade.settings import Settings

EXAMPLE = '{"text": "I like it"} or {"texts": ["I like it", "I do not"]}'


def texts_from_json(body: bytes, settings: Settings) -> tuple[list[str], bool]:
    """Return the texts in a JSON body, and whether the client sent the single "text" form."""
    return _texts_of(_json_object(body), settings)


def classify_request(body: bytes, settings: Settings) -> tuple[list[str], bool, dict]:
    """Return the texts in a JSON body, whether it used the single "text" form, and its options."""
    return classify_payload(_json_object(body), settings)


def json_object(body: bytes) -> dict:
    """Return the JSON object a body holds, or raise invalid_json saying what is wrong."""
    return _json_object(body)


def checked_texts(
    value: object, where: str, settings: Settings, *, one_text_allowed: bool = True, items: str | None = None
) -> list[str]:
    """Return value if it is a list of 1 to max_texts texts the model can classify.

    `where` names the field in the errors, `items` its items (default: `where`), and
    `one_text_allowed` says whether the field also takes a single string instead of a list.
    """
    if not isinstance(value, list):
        expected = "a string or a list of strings" if one_text_allowed else "a list of strings"
        raise InvalidTextTypeError(f"{where} must be {expected}, not {_json_type(value)}.")
    if not value:
        raise EmptyTextsError(f"{where} is an empty list; send 1 to {settings.max_texts} strings.")
    if len(value) > settings.max_texts:
        raise TooManyTextsError(
            f"{where} has {len(value)} items, over the limit of {settings.max_texts}; "
            "split them across several requests."
        )
    return [checked_text(item, f"{items or where}[{index}]", settings) for index, item in enumerate(value)]


def classify_payload(payload: dict, settings: Settings) -> tuple[list[str], bool, dict]:
    """Return the texts of a parsed JSON body, whether it used the single "text" form, and its options."""
    texts, single = _texts_of(payload, settings)
    return texts, single, classify_options(payload, settings.default_truncation)


def _texts_of(payload: dict, settings: Settings) -> tuple[list[str], bool]:
    if "text" in payload and "texts" in payload:
        raise ConflictingFieldsError('Send either "text" or "texts", not both.')
    if "text" in payload:
        return [checked_text(payload["text"], '"text"', settings)], True
    if "texts" in payload:
        return checked_texts(payload["texts"], '"texts"', settings, one_text_allowed=False, items="texts"), False
    raise MissingTextError(f'The JSON object has neither "text" nor "texts"; send {EXAMPLE}.')


def checked_text(value: object, where: str, settings: Settings) -> str:
    """Return value if it is a text the model can classify; `where` names it in the error."""
    if not isinstance(value, str):
        raise InvalidTextTypeError(f"{where} must be a string, not {_json_type(value)}.")
    if not value.strip():
        raise EmptyTextError(f"{where} is empty or only whitespace; send some words to classify.")
    if len(value) > settings.max_text_chars:
        raise TextTooLongError(
            f"{where} has {len(value)} characters, over the limit of {settings.max_text_chars}; "
            "shorten it or split it into several texts."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError(
            f"{where} contains an unpaired surrogate (such as \\ud800), which is not text; send valid Unicode."
        ) from None
    return value


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise InvalidJsonError("The body is not valid UTF-8; send JSON encoded as UTF-8.") from None
    except RecursionError:
        raise InvalidJsonError(f"The JSON is nested too deeply; send {EXAMPLE}.") from None
    except ValueError as exc:
        raise InvalidJsonError(f"The body is not valid JSON ({exc}); send {EXAMPLE}.") from None
    if not isinstance(payload, dict):
        raise InvalidJsonError(f"The JSON body must be an object, not {_json_type(payload)}; send {EXAMPLE}.")
    return payload


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    # JSON leaves the meaning of a repeated key open ({"text": "good", "text": "bad"}); parsers
    # disagree on which one wins, so the facade refuses to guess.
    payload = dict(pairs)
    if len(payload) != len(pairs):
        seen = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {json.dumps(repeated)[:40]} appears more than once in an object")
    return payload


def _reject_constant(name: str):
    # Python's json accepts NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not a JSON value")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"
