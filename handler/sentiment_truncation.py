"""Long texts on purpose: which part of a text over the model's token limit gets classified.

Pure Python (no torch), like sentiment_requests.py. A request chooses a mode (`truncation`):

right      keep the start (what the tokenizer does by itself; the default)
left       keep the end
head_tail  keep the start and the end: a quarter of the tokens from the head, the rest from the
           tail, the best of the truncation strategies for long reviews in Sun et al. 2019, "How to
           Fine-Tune BERT for Text Classification" (IMDb: head 128 + tail 382 of 510 tokens)
error      refuse a text over the limit (413 text_too_many_tokens, with its token count)
window     classify overlapping windows over the whole text and average their probabilities

A text is cut at token boundaries by the tokenizer's character offsets, so each part is a
substring of the text (a text the model can read), and the rest of the handler treats the parts
like any other texts: they are tokenized, priced against the token limits, batched and run.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np

MODES = ("right", "left", "head_tail", "error", "window")
DEFAULT_MODE = "right"
# Sun et al.'s best split: 128 of 510 tokens from the head.
HEAD_SHARE = 0.25
# Windows overlap by half their length, so every token is read once near a window's middle.
WINDOW_STRIDE_SHARE = 0.5
# At most this many windows per text; a longer text gets this many spread evenly over it (with
# gaps, so it is flagged truncated). Each window also counts in the request's token limit.
MAX_WINDOWS = 8


@dataclass(frozen=True)
class Part:
    """A part of a text to classify: a substring, and its weight when the parts are averaged."""

    text: str
    weight: int = 1


@dataclass(frozen=True)
class Cut:
    """What a mode made of one text: the parts to classify, and whether some of the text is left out."""

    parts: tuple
    dropped: bool = False


def window_starts(tokens, size, stride_share=WINDOW_STRIDE_SHARE, max_windows=MAX_WINDOWS):
    """Return the first token of each window of `size` over `tokens` tokens: the first at 0, the last at the end."""
    if tokens <= size:
        return [0]
    stride = max(1, int(size * stride_share))
    count = min(1 + math.ceil((tokens - size) / stride), max_windows)
    if count == 1:
        return [0]
    # Evenly spaced from 0 to tokens - size: the stride, or a little less, when under the cap.
    return [round(index * (tokens - size) / (count - 1)) for index in range(count)]


def cut(text, offsets, budget, mode):
    """Return the Cut of `text` under `mode`, from its tokens' (start, end) character offsets.

    `offsets` are those of the tokens without special tokens; `budget` is how many of them the
    model reads at once (its limit less the special tokens).
    """
    tokens = len(offsets)
    if tokens <= budget or mode == "right":
        return Cut(parts=(Part(text),))
    if mode == "left":
        return Cut(parts=(Part(text[offsets[tokens - budget][0] :]),), dropped=True)
    if mode == "head_tail":
        head = max(1, int(budget * HEAD_SHARE))
        tail = budget - head
        # One space between them: the tokenizer reads the two ends as separate words.
        joined = text[: offsets[head - 1][1]] + " " + text[offsets[tokens - tail][0] :]
        return Cut(parts=(Part(joined),), dropped=True)
    if mode == "window":
        starts = window_starts(tokens, budget)
        parts = tuple(
            Part(text[offsets[start][0] : offsets[min(start + budget, tokens) - 1][1]], weight=budget)
            for start in starts
        )
        gaps = any(later > earlier + budget for earlier, later in itertools.pairwise(starts))
        return Cut(parts=parts, dropped=gaps)
    raise ValueError(f"no cut for mode {mode!r}")


def averaged(probabilities, weights):
    """Return the weighted mean of probability rows (one per window): itself a distribution.

    Averaging probabilities (soft voting) rather than logits keeps one confident window from
    outvoting several: a review that praises for most of its length and complains in one window
    stays positive, with a score that shows the doubt. Windows are weighted by their tokens.
    """
    weights = np.asarray(weights, dtype=np.float64)
    return (np.asarray(probabilities, dtype=np.float64) * weights[:, None]).sum(axis=0) / weights.sum()


def text_result(probabilities, id2label, truncated, all_scores, windows=None):
    """Return the public result of one text from its probability row."""
    best = int(np.argmax(probabilities))
    result = {"label": id2label[best], "score": float(probabilities[best])}
    if truncated:
        result["truncated"] = True
    if windows is not None:
        result["windows"] = windows
    if all_scores:
        order = sorted(range(len(probabilities)), key=lambda index: -probabilities[index])
        result["scores"] = [{"label": id2label[index], "score": float(probabilities[index])} for index in order]
    return result
