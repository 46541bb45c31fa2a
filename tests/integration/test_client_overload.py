"""The shipped client (test_app.py) against the real service: a batch over the token limit is split, not lost."""

import json
import subprocess
import sys

import pytest

from bench.abuse import MODEL_TEXT_TOKENS, WORD
from facade.settings import Settings
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.integration


def test_a_batch_over_the_token_limit_is_split_as_the_413_says_and_every_text_is_classified(shared_stack, tmp_path):
    # Twice the largest request the facade allows (texts at the model's token limit), in one batch:
    # the service answers 413 and says to split into 2; the client does, and prints every text's
    # result in input order.
    at_the_limit = " ".join([WORD] * (MODEL_TEXT_TOKENS - 4))
    count = 2 * Settings().max_request_tokens // MODEL_TEXT_TOKENS
    texts = [f"{number} {at_the_limit}" for number in range(count)]
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(texts) + "\n", encoding="utf-8")

    client = [sys.executable, str(PROJECT_DIR / "test_app.py"), "--url", shared_stack.url, "--json"]
    result = subprocess.run(
        [*client, "--file", str(reviews), "--batch-size", str(len(texts))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert f"splitting {len(texts)} texts into 2 requests" in result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [answer["text"] for answer in answers] == texts
    assert all(answer["label"] in {"POSITIVE", "NEGATIVE"} for answer in answers)
