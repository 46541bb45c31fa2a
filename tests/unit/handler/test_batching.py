"""Length-sorted passes: which texts share a forward pass, and how much padding is left."""

import numpy as np
import pytest

from sentiment_requests import (
    ClockOffsets,
    admission,
    deadline_of,
    deferrals_of,
    exact_length_chunks,
    length_sorted_chunks,
    padded_tokens,
    padding_efficiency,
    token_prefixes,
)


@pytest.mark.parametrize(
    ("lengths", "max_tokens"),
    [([5, 50, 7, 48, 6, 49], 100), ([3] * 40, 64), ([512, 4, 4], 512), ([10], 1)],
)
def test_every_text_runs_once_and_no_pass_exceeds_the_budget(lengths, max_tokens):
    chunks = length_sorted_chunks(lengths, max_tokens)
    assert sorted(index for chunk in chunks for index in chunk) == list(range(len(lengths)))
    for chunk in chunks:
        padded = len(chunk) * max(lengths[index] for index in chunk)
        assert padded <= max_tokens or len(chunk) == 1


def test_only_texts_that_pad_to_the_same_length_share_a_pass():
    lengths = [5, 50, 7, 48, 6, 49]
    chunks = length_sorted_chunks(lengths, 300)
    # Padded to multiples of 8: 5, 6, 7 -> 8; 48 -> 48; 49, 50 -> 56.
    assert [sorted(lengths[index] for index in chunk) for chunk in chunks] == [[5, 6, 7], [48], [49, 50]]


def test_a_pass_of_one_padded_length_is_split_at_the_token_budget():
    chunks = length_sorted_chunks([30] * 10, 128)
    assert [len(chunk) for chunk in chunks] == [4, 4, 2]


def test_sorting_raises_padding_efficiency_over_one_padded_batch():
    lengths = [5, 50, 7, 48, 6, 49]
    one_batch = padding_efficiency(lengths, [list(range(len(lengths)))])
    sorted_passes = padding_efficiency(lengths, length_sorted_chunks(lengths, 150))
    assert one_batch == pytest.approx(165 / 300)
    assert sorted_passes > 0.95 > one_batch


def random_lengths(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 80))
    # Mostly sentence-sized texts, now and then a long one up to the model's limit, as traffic brings them.
    long = rng.random(count) < 0.2
    return [int(n) for n in np.where(long, rng.integers(60, 513, count), rng.integers(3, 61, count))]


@pytest.mark.parametrize("seed", range(100))
def test_exact_length_passes_run_every_text_once_within_the_budget(seed):
    lengths = random_lengths(seed)
    chunks = exact_length_chunks(lengths, 1024)
    assert sorted(index for chunk in chunks for index in chunk) == list(range(len(lengths)))
    for chunk in chunks:
        assert len(chunk) * max(lengths[index] for index in chunk) <= 1024 or len(chunk) == 1


@pytest.mark.parametrize("seed", range(100))
def test_exact_length_passes_never_compute_more_tokens_than_the_multiple_of_8_plan(seed):
    lengths = random_lengths(seed)
    rounded = padded_tokens(lengths, length_sorted_chunks(lengths, 1024), multiple=8)
    assert padded_tokens(lengths, exact_length_chunks(lengths, 1024)) <= rounded


def test_neighbouring_lengths_share_one_pass_padded_to_the_longest_exactly():
    lengths = [23, 17, 18]
    chunks = exact_length_chunks(lengths, 1024)
    assert chunks == [[1, 2, 0]]
    # 3 x 23 tokens, where rounding to 8 computes 3 x 24.
    assert padded_tokens(lengths, chunks) == 69 < padded_tokens(lengths, length_sorted_chunks(lengths, 1024), 8)


def test_lengths_8_apart_share_a_pass_only_when_a_pass_costs_more_than_the_padding():
    lengths = [17, 25]
    # Rounded to 8 they run apart (24 and 32 tokens); together they compute 50 tokens for 42.
    assert exact_length_chunks(lengths, 1024, pass_cost=32) == [[0, 1]]
    assert exact_length_chunks(lengths, 1024, pass_cost=4) == [[0], [1]]


def test_with_free_passes_each_exact_length_runs_alone():
    lengths = [12, 12, 13, 14, 14]
    chunks = exact_length_chunks(lengths, 1024, pass_cost=0)
    assert [sorted({lengths[index] for index in chunk}) for chunk in chunks] == [[12], [13], [14]]


def test_a_merge_that_would_compute_more_than_the_rounded_plan_is_not_made():
    # 3 and 17: rounded, 8 + 24 = 32 tokens in two passes; exact in one pass, 34 tokens.
    assert exact_length_chunks([3, 17], 1024, pass_cost=64) == [[0], [1]]


def codes(decisions):
    return [None if decision is None else decision.code for decision in decisions]


def test_admission_refuses_requests_over_the_limit_and_skips_passed_deadlines():
    decisions = admission(
        [700, 10, 20, None], [None, 99.0, 101.0, 50.0], [0] * 4, now=100.0, limit=600, max_text_tokens=512
    )
    assert codes(decisions) == ["too_many_tokens", "deadline_exceeded", None, None]
    assert decisions[0].status == 413 and decisions[1].status == 503


def test_admission_takes_the_cheapest_of_the_same_rank_within_the_budget_and_its_eighth():
    decisions = admission(
        [400, 300, 10, 290, 5], [None] * 5, [0] * 5, now=0.0, limit=2048, max_text_tokens=512, budget=600
    )
    # 5 + 10 + 290 = 305; + 300 = 605 fits in 600 + 75; + 400 would not.
    assert codes(decisions) == ["busy", None, None, None, None]


def test_a_light_job_rides_along_with_a_heavy_one_instead_of_waiting_behind_it():
    decisions = admission([2048, 6], [None] * 2, [1, 0], now=0.0, limit=2048, max_text_tokens=512, budget=2048)
    assert codes(decisions) == [None, None]


def test_a_deferred_job_outranks_newer_ones_so_a_large_job_is_never_starved():
    # A 2048-token job deferred once goes before a stream of light jobs that came before it this time.
    decisions = admission(
        [300, 300, 2048, 300], [None] * 4, [0, 0, 1, 0], now=0.0, limit=2048, max_text_tokens=512, budget=600
    )
    assert codes(decisions) == ["busy", "busy", None, "busy"]


def test_a_job_without_the_deferrals_header_always_runs():
    decisions = admission(
        [500, 500, 500], [None] * 3, [0, None, 0], now=0.0, limit=2048, max_text_tokens=512, budget=600
    )
    # It goes first (nobody would send it again), and the budget it spent defers the others.
    assert codes(decisions) == ["busy", None, "busy"]


def test_admission_always_runs_one_request_and_budget_0_runs_all():
    assert codes(admission([600], [None], [3], now=0.0, limit=600, max_text_tokens=512, budget=10)) == [None]
    assert codes(admission([5000, 9000], [None, None], [0, 0], now=0.0, limit=0, max_text_tokens=512)) == [None, None]


@pytest.mark.parametrize(
    ("value", "expected"), [("1700000000.5", 1700000000.5), (b"12", 12.0), ("x", None), (None, None), ("inf", None)]
)
def test_the_deadline_header_is_read_as_unix_seconds_or_ignored(value, expected):
    assert deadline_of(value) == expected


@pytest.mark.parametrize(("value", "expected"), [("0", 0), (b"3", 3), ("-1", None), ("x", None), (None, None)])
def test_the_deferrals_header_is_read_as_a_count_or_ignored(value, expected):
    assert deferrals_of(value) == expected


def test_admission_skips_a_request_that_could_not_finish_before_its_deadline():
    # 1 ms per token: the 500-token request ends at 100.5 at the earliest, the 10-token one at 100.01.
    decisions = admission(
        [500, 10], [100.3, 100.3], [0, 0], now=100.0, limit=2048, max_text_tokens=512, seconds_per_token=0.001
    )
    assert codes(decisions) == ["deadline_exceeded", None]


HARD_TEXTS = [
    "good " * 600,
    "!" * 3000,
    "很好看的电影" * 200,
    "🎉 " * 700 + "ok",
    "e\u0301" * 900 + " fine",
    "a\u200b" * 1200,
    "\u200b " * 3000 + "end",
    ("word, " * 100 + "x" * 300 + " ") * 4,
    "한국어 문장입니다. " * 150,
    "short text",
]


@pytest.fixture(scope="module", params=["tiny", "test"])
def bert_tokenizer(request, tiny_model_dir):
    from transformers import AutoTokenizer

    from stack.models import TEST_MODEL_DIR, has_test_model

    if request.param == "test" and not has_test_model():
        pytest.skip(f"needs the test model at {TEST_MODEL_DIR}")
    model_dir = tiny_model_dir if request.param == "tiny" else TEST_MODEL_DIR
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert type(tokenizer.backend_tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer"
    return tokenizer


@pytest.mark.parametrize("text", HARD_TEXTS)
@pytest.mark.parametrize("max_length", [8, 128, 512])
def test_a_prefix_cut_at_a_split_point_gives_the_ids_of_the_whole_text_truncated(bert_tokenizer, text, max_length):
    def count(texts):
        return [len(ids) for ids in bert_tokenizer(texts)["input_ids"]]

    (prefix,) = token_prefixes([text], max_length + 1, count, 4 * (max_length + 1))
    for limit in (max_length, max_length + 1):
        whole = bert_tokenizer([text], truncation=True, max_length=limit)["input_ids"]
        assert bert_tokenizer([prefix], truncation=True, max_length=limit)["input_ids"] == whole
    if count([text])[0] > 4 * (max_length + 1) * 2:
        assert len(prefix) < len(text)  # the point: a long text is not tokenized whole


def test_a_sender_whose_clock_is_behind_gets_its_deadlines_corrected_and_one_in_sync_does_not():
    offsets = ClockOffsets()
    # Facade "behind" runs 30 s behind the worker; its jobs wait 0 to 2 s in the queue.
    for wait in (2.0, 0.0, 1.0):
        sent = 1000.0
        offset = offsets.offset_s("behind", sent + 14.5, 14.5, now=sent + 30 + wait)
    assert offset == pytest.approx(30.0)
    # In sync (a job that waited 0.4 s): left alone, and another sender's skew does not leak into it.
    assert offsets.offset_s("in-sync", 1014.5, 14.5, now=1000.4) == 0.0
    # Ahead by 20 s: its deadlines would let jobs run 20 s after it stopped waiting.
    assert offsets.offset_s("ahead", 1014.5, 14.5, now=980.0) == pytest.approx(-20.0)
    assert offsets.offset_s("none", None, 14.5, now=0.0) == 0.0
