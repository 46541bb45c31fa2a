"""The facade's bounds of what texts cost in tokens, without a tokenizer (it never imports the model).

The handler, which has the tokenizer, is the authority: it counts each TorchServe request's
tokens, refuses one over its `max_request_tokens` (model-config.yaml, the one place that limit is
set) with 413 too_many_tokens stating its limits, and states the tokens of every answer. The
facade needs two bounds that hold for any text, computed from characters alone:

- `tokens_at_most`, an upper bound, to cut a request into jobs that are surely within the
  handler's limit (facade/jobs.py);
- `tokens_at_least`, a lower bound, to refuse at once a request surely over the facade's own
  limit per request, before any of it is paid for.

Both follow what a BERT (WordPiece) tokenizer does: it deletes control and format characters
(zero-width ones included), splits on whitespace, makes each punctuation character and each CJK
ideograph a token of its own, and cuts each remaining word into pieces of at least one character
(a word over 100 characters becomes one [UNK]); uncased ones decompose (NFD) and drop combining
marks first. tests/unit/facade/test_facade_tokens.py checks both bounds against the real
tokenizers on punctuation, CJK, emoji, combining marks and zero-width characters.
"""

import math
import re
import threading
import time
import unicodedata

LIMIT_TRUSTED_S = 60.0
# The classifier adds [CLS] and [SEP] to every text.
SPECIAL_TOKENS = 2
# What every BERT tokenizer treats as whitespace (the slow one: ASCII and Zs; the fast one: all of
# Unicode's White_Space, a superset): these characters never become tokens.
WHITESPACE = re.compile("[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# Where every BERT tokenizer surely ends a word: ASCII whitespace, ASCII punctuation (a token each)
# and CJK ideographs (a token each: handle_chinese_chars, on by default).
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
SINGLE_TOKEN = re.compile(f"[!-/:-@\\[-`{{-~{CJK}]")
SURE_SPLIT = re.compile(f"[ \t\n\r!-/:-@\\[-`{{-~{CJK}]")
# Characters a tokenizer deletes or may delete: control, format (zero-width), private use and
# unassigned ones (all C*), combining marks (Mn, dropped with the accents), and U+FFFD.
DELETED_CATEGORIES = ("Cc", "Cf", "Co", "Cn", "Cs", "Mn", "Zs", "Zl", "Zp")


def tokens_at_most(text: str, max_text_tokens: int | None = None) -> int:
    """Return an upper bound of the text's token count (special tokens included), cut at max_text_tokens.

    Every token takes at least one character of the normalized text, and whitespace gives none.
    Normalizing can lengthen a text (NFD splits a Hangul syllable into up to 3 jamo; lowering
    'İ' gives two characters), so the longer of the two normalized forms is counted.
    """
    longest = max(len(unicodedata.normalize("NFD", text)), len(unicodedata.normalize("NFD", text.lower())))
    tokens = longest - len(WHITESPACE.findall(text)) + SPECIAL_TOKENS
    return tokens if max_text_tokens is None else min(tokens, max_text_tokens)


def tokens_at_least(text: str, max_text_tokens: int) -> int:
    """Return a lower bound of the text's token count after truncation to max_text_tokens.

    Each ASCII punctuation character and CJK ideograph is a token; between them (and ASCII
    whitespace) each word with a character that no tokenizer deletes gives at least one.
    """
    singles = len(SINGLE_TOKEN.findall(text))
    words = sum(1 for word in SURE_SPLIT.split(text) if word and _has_kept_character(word))
    return min(singles + words + SPECIAL_TOKENS, max_text_tokens)


def _has_kept_character(word: str) -> bool:
    return any(char != "\ufffd" and unicodedata.category(char) not in DELETED_CATEGORIES for char in word)


def too_many_tokens_message(tokens: int, limit: int, max_text_tokens: int, at_least: bool = False) -> str:
    """Return the message of a too_many_tokens error (the handler words its own the same way)."""
    count = f"at least {tokens}" if at_least else str(tokens)
    return (
        f"The texts of this request come to {count} tokens, over the limit of {limit} tokens per request "
        f"(each text counts at most {max_text_tokens}); split them into at least {math.ceil(tokens / limit)} requests."
    )


class TokenLimits:
    """The handler's token limits per TorchServe request, as last learned from its 413 answers.

    Until one came (and LIMIT_TRUSTED_S after it, so that an archive served with other limits is
    picked up without a facade restart) the shipped defaults hold: jobs cut to them that turn out
    too large for another archive get 413, teach the facade its limits, and are cut again.
    """

    def __init__(self, default_request_tokens: int, default_text_tokens: int, clock=time.monotonic):
        self._defaults = (default_request_tokens, default_text_tokens)
        self._clock = clock
        self._lock = threading.Lock()
        self._learned = None  # (max_request_tokens, max_text_tokens, when)

    def learn(self, max_request_tokens: object, max_text_tokens: object) -> bool:
        """Remember the limits a 413 answer stated; return False (and ignore them) unless whole numbers above 0."""
        if not all(
            isinstance(value, int) and not isinstance(value, bool) and value > 0
            for value in (max_request_tokens, max_text_tokens)
        ):
            return False
        with self._lock:
            self._learned = (max_request_tokens, max_text_tokens, self._clock())
        return True

    def current(self) -> tuple[int, int]:
        """Return (tokens per TorchServe request, tokens per text) as the handler last stated them."""
        with self._lock:
            learned = self._learned
        if learned is None or self._clock() - learned[2] > LIMIT_TRUSTED_S:
            return self._defaults
        return learned[0], learned[1]
