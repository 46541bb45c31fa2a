"""PRECISION=auto's rules as pure functions of logits: flips, score change, threshold, the record."""

import numpy as np
import pytest

from tools.precision_gate import (
    MIN_SAMPLE_SENTENCES,
    SAMPLE,
    Agreement,
    agreement,
    choice,
    dominant_label,
    max_flip_rate_from,
    most_sensitive,
    one_label_choice,
    percent,
    sample_sentences,
    sensitivity,
)


def test_a_label_that_changes_is_a_flip_and_the_score_change_is_the_largest_probability_change():
    reference = np.array([[2.0, 0.0], [0.0, 2.0], [0.1, 0.0], [0.0, 3.0]])
    candidate = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.1], [0.0, 1.0]])
    result = agreement(reference, candidate)
    assert (result.sentences, result.flips) == (4, 1)
    assert result.flip_rate == 0.25
    # Row 4 moves most: softmax 0.9526 -> 0.7311 for POSITIVE.
    assert result.max_score_change == pytest.approx(0.2215, abs=1e-4)


def test_identical_logits_agree_fully():
    logits = np.array([[0.3, -0.2], [1.0, 4.0]])
    assert agreement(logits, logits) == Agreement(sentences=2, flips=0, max_score_change=0.0)


def test_logits_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="different shapes"):
        agreement(np.zeros((3, 2)), np.zeros((2, 2)))


def test_the_first_candidate_within_the_rate_is_packed_as_int8_with_its_figures():
    tries = [((), Agreement(1200, 14, 0.256)), ((1,), Agreement(1200, 9, 0.162))]
    record = choice(tries, max_flip_rate=0.01, sample_name="tools/agreement/sentences.txt")
    assert record == {
        "requested": "auto",
        "precision": "int8",
        "reason": (
            "int8 with layer 1 in fp32: 9 of 1200 labels flip (0.75 %), largest score change 0.162 "
            "on tools/agreement/sentences.txt, within the 1 % allowed"
        ),
        "sample": "tools/agreement/sentences.txt",
        "sentences": 1200,
        "flip_rate": 0.0075,
        "max_score_change": 0.162,
        "max_flip_rate": 0.01,
        "fp32_layers": [1],
    }


def test_a_flip_rate_exactly_at_the_threshold_passes():
    assert choice([((), Agreement(1000, 10, 0.3))], max_flip_rate=0.01)["precision"] == "int8"


def test_one_flip_over_the_threshold_packs_fp32_and_reports_the_last_try():
    tries = [((), Agreement(1000, 30, 0.5)), ((0,), Agreement(1000, 20, 0.4)), ((0, 2), Agreement(1000, 11, 0.3))]
    record = choice(tries, max_flip_rate=0.01, sample_name="mine.txt")
    assert record["precision"] == "fp32"
    assert record["fp32_layers"] == [0, 2]
    assert record["flip_rate"] == 0.011
    assert record["reason"] == (
        "fp32: int8 with layers 0, 2 in fp32 would flip 11 of 1000 labels (1.10 %) on mine.txt, over the 1 % allowed"
    )


def test_a_stricter_threshold_turns_the_same_measurement_into_fp32():
    tries = [((), Agreement(1200, 9, 0.162))]
    assert choice(tries, max_flip_rate=0.01)["precision"] == "int8"
    assert choice(tries, max_flip_rate=0.005)["precision"] == "fp32"
    assert choice(tries, max_flip_rate=0.0)["precision"] == "fp32"


def test_no_try_is_an_error():
    with pytest.raises(ValueError):
        choice([])


def test_the_most_sensitive_layers_come_first_and_at_most_the_count_asked():
    errors = {0: 0.0041, 1: 0.0057, 2: 0.0032, 3: 0.0015}
    assert most_sensitive(errors, 2) == [1, 0]
    assert most_sensitive(errors, 10) == [1, 0, 2, 3]
    assert most_sensitive({0: 0.1, 1: 0.1}, 1) == [0]


def test_sensitivity_is_the_mean_squared_logit_change():
    assert sensitivity([[0.0, 1.0]], [[1.0, 3.0]]) == pytest.approx(2.5)


@pytest.mark.parametrize(("rate", "text"), [(0.01, "1 %"), (0.0075, "0.75 %"), (0.0, "0 %"), (0.011, "1.10 %")])
def test_percentages_show_the_decimals_they_need(rate, text):
    assert percent(rate) == text


@pytest.mark.parametrize("text", ["1.5", "-0.1", "1%", "one"])
def test_a_max_flip_rate_outside_0_to_1_is_refused_with_an_example(text):
    with pytest.raises(ValueError, match=r"between 0 and 1 \(0\.01 = 1 %\)"):
        max_flip_rate_from(text)


def test_the_shipped_sample_has_at_least_1000_distinct_texts():
    sentences = sample_sentences(SAMPLE)
    assert len(sentences) >= 1000
    assert len(set(sentences)) == len(sentences)


def test_the_shipped_sample_is_written_by_its_generator(tmp_path):
    from devtools.agreement_sentences import sentences

    assert sample_sentences(SAMPLE) == sentences()


def test_a_sample_too_small_to_show_a_1_percent_rate_is_refused(tmp_path):
    small = tmp_path / "mine.txt"
    small.write_text("good\n\nbad\n" * 10)
    with pytest.raises(ValueError, match=f"has 20 texts; the int8 check needs at least {MIN_SAMPLE_SENTENCES}"):
        sample_sentences(small)


def test_the_label_given_most_often_and_its_share():
    logits = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert dominant_label(logits) == (0, 0.75)


def test_a_model_that_gives_one_label_to_nearly_every_text_is_packed_fp32_and_says_why():
    record = one_label_choice("NEGATIVE", 1.0, 1200, "tools/agreement/sentences.txt")
    assert record["precision"] == "fp32"
    assert record["reason"] == (
        "fp32: the model gives NEGATIVE to 100 % of the 1200 texts of tools/agreement/sentences.txt, "
        "so agreement with int8 there would say nothing (at most 95 % may share a label)"
    )
