"""The upgrade check's figures and verdict (tools/model_check.py): pure functions, no server."""

import pytest

from tools.model_check import (
    LABELLED_SENTENCES,
    CheckError,
    Figures,
    Thresholds,
    answer_labels,
    figures,
    labelled_texts,
    problems,
)

LABELS = ["POSITIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]


def test_figures_compare_both_versions_on_the_same_texts():
    measured = figures(
        candidate_labels=["POSITIVE", "NEGATIVE", "NEGATIVE", "NEGATIVE"],
        current_labels=["POSITIVE", "NEGATIVE", "POSITIVE", "POSITIVE"],
        labels=LABELS,
    )
    assert measured == Figures(texts=4, candidate_accuracy=0.75, current_accuracy=0.75, agreement=0.5)


def test_a_candidate_as_good_as_the_current_version_passes():
    assert problems(Figures(200, 0.90, 0.91, 0.95), Thresholds()) == []


def test_a_candidate_less_accurate_than_the_current_version_fails_naming_the_option():
    found = problems(Figures(200, 0.80, 0.91, 0.95), Thresholds())
    assert len(found) == 1 and "--max-accuracy-drop 0.02" in found[0] and "0.110" in found[0]


def test_a_candidate_that_disagrees_too_often_fails():
    found = problems(Figures(200, 0.91, 0.91, 0.70), Thresholds(min_agreement=0.8))
    assert found == ["agreement 0.700 < --min-agreement 0.8"]


def test_an_absolute_accuracy_bound_fails_a_weak_candidate_even_when_the_current_one_is_weaker():
    found = problems(Figures(200, 0.60, 0.50, 0.9), Thresholds(min_accuracy=0.85))
    assert found == ["accuracy 0.600 < --min-accuracy 0.85"]


def test_switched_off_bounds_pass_anything_that_answered():
    assert problems(Figures(4, 0.0, 1.0, 0.0), Thresholds(None, None, None)) == []


def test_the_labelled_file_adds_a_reproducible_sample_to_the_fixed_sentences(tmp_path):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"text {i} \t{i % 2}\n" for i in range(50)))
    first = labelled_texts(tsv, sample=10, seed=3)
    assert first[: len(LABELLED_SENTENCES)] == list(LABELLED_SENTENCES)
    assert len(first) == len(LABELLED_SENTENCES) + 10
    assert first == labelled_texts(tsv, sample=10, seed=3)
    assert all(label == ("POSITIVE" if int(text.split()[1]) % 2 else "NEGATIVE") for text, label in first[4:])
    assert len(labelled_texts(tsv, sample=500)) == len(LABELLED_SENTENCES) + 50


def test_a_file_without_sst2_columns_says_what_it_expected(tmp_path):
    tsv = tmp_path / "other.tsv"
    tsv.write_text("text\tsentiment\nfine\tpositive\n")
    with pytest.raises(CheckError, match="'sentence' and 'label'"):
        labelled_texts(tsv)


@pytest.mark.parametrize(
    "body",
    [{"results": [{"label": "POSITIVE"}]}, {"results": [{"score": 0.9}, {"label": "NEGATIVE"}]}, {"error": {}}, []],
)
def test_an_answer_without_a_label_per_text_cannot_be_checked(body):
    with pytest.raises(CheckError):
        answer_labels(body, 2)
