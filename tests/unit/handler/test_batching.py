"""Length-sorted passes: which texts share a forward pass, and how much padding is left."""

import pytest

from sentiment_requests import admission, deadline_of, length_sorted_chunks, padding_efficiency


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


def codes(decisions):
    return [None if decision is None else decision.code for decision in decisions]


def test_admission_refuses_requests_over_the_limit_and_skips_passed_deadlines():
    decisions = admission([700, 10, 20, None], [None, 99.0, 101.0, 50.0], now=100.0, limit=600, max_text_tokens=512)
    assert codes(decisions) == ["too_many_tokens", "deadline_exceeded", None, None]
    assert decisions[0].status == 413 and decisions[1].status == 503


def test_admission_runs_the_cheapest_first_within_the_budget():
    decisions = admission([400, 300, 10, 290, 5], [None] * 5, now=0.0, limit=600, max_text_tokens=512)
    # 5 + 10 + 290 = 305; + 300 = 605 is over 600, and so is + 400.
    assert codes(decisions) == ["busy", "busy", None, None, None]


def test_admission_always_runs_one_request_and_limit_0_runs_all():
    assert codes(admission([600], [None], now=0.0, limit=600, max_text_tokens=512)) == [None]
    assert codes(admission([5000, 9000], [None, None], now=0.0, limit=0, max_text_tokens=512)) == [None, None]


@pytest.mark.parametrize(
    ("value", "expected"), [("1700000000.5", 1700000000.5), (b"12", 12.0), ("x", None), (None, None), ("inf", None)]
)
def test_the_deadline_header_is_read_as_unix_seconds_or_ignored(value, expected):
    assert deadline_of(value) == expected


def test_admission_skips_a_request_that_could_not_finish_before_its_deadline():
    # 1 ms per token: the 10-token request ends at 100.01, the 500-token one at 100.51 at the earliest.
    decisions = admission(
        [500, 10], [100.3, 100.3], now=100.0, limit=2048, max_text_tokens=512, seconds_per_token=0.001
    )
    assert codes(decisions) == ["deadline_exceeded", None]
