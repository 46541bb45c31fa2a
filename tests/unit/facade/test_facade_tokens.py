"""The facade's token count is a lower bound of the real tokenizer's, and limits are learned, then expire."""

import pytest
from transformers import AutoTokenizer

from facade.tokens import LIMIT_TRUSTED_S, TokenLimits, tokens_at_least
from tests.conftest import TEST_MODEL_DIR

HOSTILE = [
    "It is worth it",
    "a\x1cb\x1dc d\x1fe",  # control characters: Python's split() splits there, the tokenizer deletes them
    "\u200b \u200b\u200c word \ufeff",  # words of zero-width characters only
    "e\u0301 \u0301\u0301 cafe\u0301",  # combining accents alone vanish (uncased strips accents)
    "\x00\x07 \ud7ff",
    "x" * 300 + " " + "y" * 5,  # a word too long for WordPiece becomes one [UNK]
    "这部电影很好看",  # each CJK character is a token of its own
    "don't stop-believing!!! ...",
    "\u00a0spaced\u2003out\u3000words\u205fhere",
    "½ ² ⅷ ٣ ९",
    " ".join(["good"] * 700),
    "",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """The stand-in's real uncased WordPiece tokenizer when ../shared has it, else the tiny model's."""
    model_dir = TEST_MODEL_DIR if (TEST_MODEL_DIR / "vocab.txt").is_file() else tiny_model_dir
    return AutoTokenizer.from_pretrained(str(model_dir))


@pytest.mark.parametrize("text", HOSTILE)
def test_the_count_is_never_above_the_tokenizers(tokenizer, text):
    real = len(tokenizer(text, truncation=True, max_length=512)["input_ids"])
    assert tokens_at_least(text, 512) <= real


def test_plain_words_count_one_each_plus_two_and_the_text_limit_caps_it():
    assert tokens_at_least("It is worth it", 512) == 6
    assert tokens_at_least("good " * 1000, 512) == 512


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_nothing_is_refused_until_a_limit_is_learned_and_after_it_expires():
    clock = Clock()
    limits = TokenLimits(clock)
    heavy = ["word " * 400] * 3
    assert limits.refusal(heavy) is None
    limits.learn(600, 512)
    assert "at least 1206 tokens" in limits.refusal(heavy)
    assert limits.refusal(["word " * 400]) is None
    clock.now = LIMIT_TRUSTED_S + 1
    assert limits.refusal(heavy) is None


@pytest.mark.parametrize(("limit", "text_limit"), [(None, 512), (600, "512"), (0, 512), (True, 512)])
def test_limits_that_are_not_whole_numbers_above_0_are_not_learned(limit, text_limit):
    limits = TokenLimits()
    limits.learn(limit, text_limit)
    assert limits.refusal(["word " * 500] * 64) is None
