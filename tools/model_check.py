"""The check a new model version passes before it becomes the default (tools/model_upgrade.py).

The same texts go to the candidate version and to the current default, each addressed by its
version (/predictions/<model>/<version>), so the figures compare two models on one replica and not
two replicas: accuracy on texts with known labels (a few hand-labelled sentences, plus a sample of
a labelled TSV such as SST-2 dev when given) and agreement, the share of texts both label alike.
"""

import csv
import random
from dataclasses import dataclass
from pathlib import Path

# Short sentences whose label no sentiment model should get wrong; always part of the check.
LABELLED_SENTENCES = (
    ("It is worth it", "POSITIVE"),
    ("It is a waste of time and money", "NEGATIVE"),
    ("The acting was wonderful and the story moved me", "POSITIVE"),
    ("I would not recommend it to anyone", "NEGATIVE"),
)
# SST-2's label column: 1 positive, 0 negative.
SST2_LABELS = {"1": "POSITIVE", "0": "NEGATIVE"}


class CheckError(RuntimeError):
    """The check could not run (a version did not answer, or answered something unusable)."""


@dataclass(frozen=True)
class Thresholds:
    """What the candidate must reach; None switches a bound off."""

    min_accuracy: float | None = None
    max_accuracy_drop: float | None = 0.02
    min_agreement: float | None = 0.8


@dataclass(frozen=True)
class Figures:
    """What the check measured on one replica."""

    texts: int
    candidate_accuracy: float
    current_accuracy: float
    agreement: float

    def summary(self, candidate, current):
        """Return the figures as one line naming both versions."""
        return (
            f"{self.texts} texts: accuracy {candidate} {self.candidate_accuracy:.3f}, "
            f"{current} {self.current_accuracy:.3f}; agreement {self.agreement:.3f}"
        )


def labelled_texts(labelled_file=None, sample=200, seed=0):
    """Return [(text, label)]: the fixed sentences plus `sample` rows of a labelled TSV (sentence, label)."""
    pairs = list(LABELLED_SENTENCES)
    if labelled_file is None:
        return pairs
    with Path(labelled_file).open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    try:
        file_pairs = [(row["sentence"].strip(), SST2_LABELS[row["label"].strip()]) for row in rows]
    except KeyError as exc:
        raise CheckError(
            f"{labelled_file}: expected the columns 'sentence' and 'label' (0 or 1), as SST-2's dev.tsv"
        ) from exc
    # A reproducible sample, not a secret.
    return pairs + random.Random(seed).sample(  # noqa: S311
        file_pairs, min(sample, len(file_pairs))
    )


def accuracy(predicted, labels):
    """Return the share of `predicted` labels equal to `labels` (same order)."""
    return sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)


def figures(candidate_labels, current_labels, labels):
    """Return the figures of one replica from both versions' labels of the same texts."""
    return Figures(
        texts=len(labels),
        candidate_accuracy=accuracy(candidate_labels, labels),
        current_accuracy=accuracy(current_labels, labels),
        agreement=accuracy(candidate_labels, current_labels),
    )


def problems(measured, thresholds):
    """Return why the candidate fails the check (an empty list: it passes)."""
    found = []
    if thresholds.min_accuracy is not None and measured.candidate_accuracy < thresholds.min_accuracy:
        found.append(f"accuracy {measured.candidate_accuracy:.3f} < --min-accuracy {thresholds.min_accuracy}")
    drop = measured.current_accuracy - measured.candidate_accuracy
    if thresholds.max_accuracy_drop is not None and drop > thresholds.max_accuracy_drop:
        found.append(
            f"accuracy {drop:.3f} below the current version's, more than --max-accuracy-drop "
            f"{thresholds.max_accuracy_drop}"
        )
    if thresholds.min_agreement is not None and measured.agreement < thresholds.min_agreement:
        found.append(f"agreement {measured.agreement:.3f} < --min-agreement {thresholds.min_agreement}")
    return found


def answer_labels(body, expected):
    """Return the labels of a handler answer to {"texts": [...]}; raise CheckError if unusable."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise CheckError(f"expected {expected} results, got {str(body)[:200]}")
    labels = [result.get("label") if isinstance(result, dict) else None for result in results]
    if not all(isinstance(label, str) for label in labels):
        raise CheckError(f"an answer without a label: {str(body)[:200]}")
    return labels
