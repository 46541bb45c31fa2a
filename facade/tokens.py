"""The facade's cheap check of a request's cost in tokens, before TorchServe is asked.

The handler, which has the tokenizer, is the authority: it counts each request's tokens and
refuses one over its `max_request_tokens` (model-config.yaml, the one place that limit is set)
with 413 too_many_tokens, stating the limit. The facade learns the limit from such an answer and
from then on refuses requests that are surely over it itself, without a tokenizer (it never
imports the model): the count below is a lower bound of the real one, so it never refuses a
request the handler would take. A learned limit is trusted for LIMIT_TRUSTED_S, then learned
again, so an archive served with another limit is picked up without a facade restart.
"""

import math
import re
import threading
import time

LIMIT_TRUSTED_S = 60.0
# The classifier adds [CLS] and [SEP] to every text.
SPECIAL_TOKENS = 2
# What BERT's tokenizers split words on: ASCII whitespace and Unicode space separators (Zs).
# Python's str.split() also splits on control characters, which the tokenizer deletes instead.
WORD_SEPARATORS = re.compile("[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


def tokens_at_least(text: str, max_text_tokens: int) -> int:
    """Return a lower bound of the text's token count after truncation to max_text_tokens.

    Every word with a letter or digit in it gives the tokenizer at least one token (a word it
    does not know becomes [UNK]); punctuation and CJK characters only add tokens, and words of
    only control or zero-width characters may give none, so they are not counted.
    """
    words = sum(1 for word in WORD_SEPARATORS.split(text) if any(char.isalnum() for char in word))
    return min(words + SPECIAL_TOKENS, max_text_tokens)


def too_many_tokens_message(tokens: int, limit: int, max_text_tokens: int, at_least: bool = False) -> str:
    """Return the message of a too_many_tokens error (the handler words its own the same way)."""
    count = f"at least {tokens}" if at_least else str(tokens)
    return (
        f"The texts of this request come to {count} tokens, over the limit of {limit} tokens per request "
        f"(each text counts at most {max_text_tokens}); split them into at least {math.ceil(tokens / limit)} requests."
    )


class TokenLimits:
    """The handler's token limits as last learned from its 413 answers (none until one came)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._learned = None  # (max_request_tokens, max_text_tokens, when)

    def learn(self, max_request_tokens: object, max_text_tokens: object) -> None:
        """Remember the limits a 413 answer stated; ignore values that are not whole numbers above 0."""
        if all(
            isinstance(value, int) and not isinstance(value, bool) and value > 0
            for value in (max_request_tokens, max_text_tokens)
        ):
            with self._lock:
                self._learned = (max_request_tokens, max_text_tokens, self._clock())

    def refusal(self, texts: list[str]) -> str | None:
        """Return the too_many_tokens message when the texts are surely over the limit, else None."""
        with self._lock:
            learned = self._learned
        if learned is None or self._clock() - learned[2] > LIMIT_TRUSTED_S:
            return None
        limit, max_text_tokens, _ = learned
        tokens = sum(tokens_at_least(text, max_text_tokens) for text in texts)
        return too_many_tokens_message(tokens, limit, max_text_tokens, at_least=True) if tokens > limit else None
