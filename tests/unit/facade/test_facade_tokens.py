"""The facade's token bounds hold against the real tokenizers, and limits are learned, then expire."""

import pytest
from transformers import AutoTokenizer

from facade.tokens import LIMIT_TRUSTED_S, TokenLimits, tokens_at_least, tokens_at_most
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
    "!" * 10000,
    "?!" * 300 + "。、" * 300,
    "很好看的电影" * 300,
    "🎉 " * 2000,
    "🎉" * 2000,
    "👍🏽👨‍👩‍👧 ❤️ " * 300,
    "a\u0301\u0302\u0303 " * 1000,
    "\u200b\u200c\u200d\u2060\ufeff" * 1000,
    "x\u200by" * 1000,
    "한국어 문장입니다 " * 300,
    "İstanbul İİİ ǅ ﬁ Å Ω",
    "€£¥ ∑∫√ ©®™ ♠♣" * 200,
    "\U0001d400\U0001d401 \U00020000\U00020001 " * 300,
    "\ue000\ue001 \U000f0000 \u0378 word",
]


@pytest.fixture(scope="module", params=["test", "tiny", "test-slow"])
def tokenizer(request, tiny_model_dir):
    """The test model's real uncased WordPiece tokenizer (fast and slow), and the tiny model's."""
    if request.param.startswith("test") and not (TEST_MODEL_DIR / "vocab.txt").is_file():
        pytest.skip(f"needs the test model at {TEST_MODEL_DIR}")
    model_dir = tiny_model_dir if request.param == "tiny" else TEST_MODEL_DIR
    return AutoTokenizer.from_pretrained(str(model_dir), use_fast=request.param != "test-slow")


@pytest.mark.parametrize("text", HOSTILE)
def test_the_lower_bound_is_never_above_the_tokenizers_count(tokenizer, text):
    real = len(tokenizer(text, truncation=True, max_length=512)["input_ids"])
    assert tokens_at_least(text, 512) <= real


@pytest.mark.parametrize("text", HOSTILE)
def test_the_upper_bound_is_never_below_the_tokenizers_count(tokenizer, text):
    real = len(tokenizer(text)["input_ids"])
    assert tokens_at_most(text) >= real
    assert tokens_at_most(text, 512) >= min(real, 512)


def test_text_without_spaces_is_priced_at_its_real_cost_not_as_one_word():
    # The old count saw 2-3 tokens in each of these; the tokenizer sees thousands.
    assert tokens_at_least("!" * 10000, 20000) == 10002
    assert tokens_at_least("很好看的电影" * 300, 20000) == 1802
    assert tokens_at_least("🎉 " * 2000, 20000) == 2002


def test_plain_words_count_one_each_plus_two_and_the_text_limit_caps_it():
    assert tokens_at_least("It is worth it", 512) == 6
    assert tokens_at_least("good " * 1000, 512) == 512


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_defaults_hold_until_a_limit_is_learned_and_again_after_it_expires():
    clock = Clock()
    limits = TokenLimits(2048, 512, clock)
    assert limits.current() == (2048, 512)
    assert limits.learn(600, 128)
    assert limits.current() == (600, 128)
    clock.now = LIMIT_TRUSTED_S + 1
    assert limits.current() == (2048, 512)


@pytest.mark.parametrize(("limit", "text_limit"), [(None, 512), (600, "512"), (0, 512), (True, 512)])
def test_limits_that_are_not_whole_numbers_above_0_are_not_learned(limit, text_limit):
    limits = TokenLimits(2048, 512)
    assert not limits.learn(limit, text_limit)
    assert limits.current() == (2048, 512)
