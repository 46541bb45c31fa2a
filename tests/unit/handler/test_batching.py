"""Length-sorted passes: which texts share a forward pass, and how much padding is left."""

import pytest

from sentiment_requests import length_sorted_chunks, padding_efficiency


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


def test_texts_of_similar_length_share_a_pass():
    lengths = [5, 50, 7, 48, 6, 49]
    chunks = length_sorted_chunks(lengths, 150)
    assert [sorted(lengths[index] for index in chunk) for chunk in chunks] == [[5, 6, 7], [48, 49, 50]]


def test_sorting_raises_padding_efficiency_over_one_padded_batch():
    lengths = [5, 50, 7, 48, 6, 49]
    one_batch = padding_efficiency(lengths, [list(range(len(lengths)))])
    sorted_passes = padding_efficiency(lengths, length_sorted_chunks(lengths, 150))
    assert one_batch == pytest.approx(165 / 300)
    assert sorted_passes > 0.95 > one_batch
