"""PRECISION=auto: pack int8 only where it keeps the model's answers (build time, in `make mar`).

The int8 candidate is ONNX Runtime's dynamic quantization with per-channel weight scales
(tools/onnx_export.py). Before it is packed it is run next to the fp32 export on a text sample
(tools/agreement/sentences.txt, 1,200 sentences written for this project, CC0; or the file
AGREEMENT_SAMPLE names): the share of labels that flip and the largest change of a label's score
decide. Transformer layers are not equally sensitive to int8, so which ones to keep in fp32 is
measured here, per model: each layer is quantized alone and ranked by how far it moves the logits;
the whole model is tried first, then with the most sensitive layer in fp32, then the two most
sensitive, and the first candidate within MAX_FLIP_RATE is packed. When none is, fp32 is packed.
Agreement means something only when the fp32 model tells the sample's texts apart: a model that
gives one label to (nearly) every text, such as one with random weights, agrees with its int8 copy
whatever int8 does to its scores, so it is packed fp32 without a check.
The decision and its figures go into build-info.json (the API's /info shows them).

The decision rules are pure functions of logits; the rest runs the models.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.packed import TOOLS_DIR

SAMPLE = TOOLS_DIR / "agreement" / "sentences.txt"
MAX_FLIP_RATE = 0.01
# The project's accuracy rule for a lower precision: at most this many points of SST-2 dev lost
# against fp32 (checked by the tests and `make bench` with the trained test model, not at build time).
MAX_ACCURACY_LOSS_POINTS = 0.5
# Fewer sentences cannot show a 1 % flip rate with any confidence (one flip would be 1 %).
MIN_SAMPLE_SENTENCES = 200
# Layers that may be kept in fp32 before int8 is given up: each one kept costs speed, and a model
# that needs more than two is not one int8 suits.
MAX_FP32_LAYERS = 2
# The sensitivity ranking needs a rough order only: every 4th sentence of the sample.
SENSITIVITY_STRIDE = 4
LAYER = re.compile(r"layer\.(\d+)/")
BATCH_SIZE = 32
# The sample mixes positive, negative and neutral texts: a model that puts more than this share of
# them under one label does not tell them apart, and a flip rate measured on it says nothing.
MAX_LABEL_SHARE = 0.95


@dataclass(frozen=True)
class Agreement:
    """How far a candidate's answers are from the reference's on one sample."""

    sentences: int
    flips: int
    max_score_change: float

    @property
    def flip_rate(self):
        """Return the share of sentences whose label changed."""
        return self.flips / self.sentences if self.sentences else 0.0


def softmax(logits):
    """Return the row-wise softmax of `logits` (the scores the handler answers with)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def agreement(reference_logits, candidate_logits):
    """Return the flips and the largest score change of a candidate against the reference."""
    reference, candidate = np.asarray(reference_logits), np.asarray(candidate_logits)
    if reference.shape != candidate.shape:
        raise ValueError(f"logits of different shapes: {reference.shape} and {candidate.shape}")
    flips = int((reference.argmax(axis=1) != candidate.argmax(axis=1)).sum())
    change = float(np.abs(softmax(reference) - softmax(candidate)).max()) if len(reference) else 0.0
    return Agreement(sentences=len(reference), flips=flips, max_score_change=change)


def sensitivity(reference_logits, candidate_logits):
    """Return how far a candidate moves the logits: their mean squared difference."""
    difference = np.asarray(candidate_logits, dtype=np.float64) - np.asarray(reference_logits, dtype=np.float64)
    return float(np.mean(difference**2))


def most_sensitive(errors, count=MAX_FP32_LAYERS):
    """Return the `count` layers with the largest errors, most sensitive first (ties: lower layer first)."""
    return sorted(errors, key=lambda layer: (-errors[layer], layer))[:count]


def choice(tries, max_flip_rate=MAX_FLIP_RATE, sample_name=SAMPLE.name):
    """Return the decision recorded in build-info.json for candidates tried in order.

    `tries` is [(layers kept in fp32, Agreement)], in the order they were tried; the first within
    `max_flip_rate` wins; if none is, fp32 is packed and the last try is the one reported.
    """
    if not tries:
        raise ValueError("no int8 candidate was tried")
    chosen = next(((layers, result) for layers, result in tries if result.flip_rate <= max_flip_rate), None)
    packed_int8 = chosen is not None
    layers, result = chosen if packed_int8 else tries[-1]
    kept = f" with {layers_text(layers)} in fp32" if layers else ""
    figures = (
        f"{result.flips} of {result.sentences} labels flip ({percent(result.flip_rate)}), "
        f"largest score change {result.max_score_change:.3f}"
    )
    if packed_int8:
        reason = f"int8{kept}: {figures} on {sample_name}, within the {percent(max_flip_rate)} allowed"
    else:
        reason = (
            f"fp32: int8{kept} would flip {result.flips} of {result.sentences} labels "
            f"({percent(result.flip_rate)}) on {sample_name}, over the {percent(max_flip_rate)} allowed"
        )
    return {
        "requested": "auto",
        "precision": "int8" if packed_int8 else "fp32",
        "reason": reason,
        "sample": sample_name,
        "sentences": result.sentences,
        "flip_rate": round(result.flip_rate, 6),
        "max_score_change": round(result.max_score_change, 6),
        "max_flip_rate": max_flip_rate,
        "fp32_layers": list(layers),
    }


def dominant_label(reference_logits):
    """Return (label index, its share of the answers) of the label fp32 gives most often."""
    labels = np.asarray(reference_logits).argmax(axis=1)
    counts = np.bincount(labels)
    return int(counts.argmax()), float(counts.max() / len(labels))


def one_label_choice(label, share, sentences, sample_name=SAMPLE.name):
    """Return the decision for a model that gives `label` to `share` of the sample: fp32, unchecked."""
    return {
        "requested": "auto",
        "precision": "fp32",
        "reason": (
            f"fp32: the model gives {label} to {percent(share)} of the {sentences} texts of {sample_name}, "
            f"so agreement with int8 there would say nothing (at most {percent(MAX_LABEL_SHARE)} may share a label)"
        ),
        "sample": sample_name,
        "sentences": sentences,
    }


def torch_choice():
    """Return the decision for a torch archive: fp32, for the gate measures ONNX Runtime's int8 only."""
    return {
        "requested": "auto",
        "precision": "fp32",
        "reason": "fp32: the torch runtime (GPUs, bf16) is packed fp32; auto checks ONNX Runtime's int8 only",
    }


def layers_text(layers):
    """Return 'layer 0' / 'layers 0, 2' for layer numbers."""
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(str(layer) for layer in layers)


def percent(rate):
    """Return a rate as a percentage with as many decimals as it needs (1 %, 0.58 %)."""
    value = rate * 100
    return f"{value:.0f} %" if math.isclose(value, round(value)) else f"{value:.2f} %"


def max_flip_rate_from(text):
    """Return MAX_FLIP_RATE's value (a share between 0 and 1) from the environment's text."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"MAX_FLIP_RATE must be a share between 0 and 1 (0.01 = 1 %), got {text!r}")
    return value


def sample_sentences(path=SAMPLE):
    """Return the non-empty lines of a sample file, or raise ValueError saying what to change."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"AGREEMENT_SAMPLE={path} cannot be read ({exc}): give a UTF-8 file, one text a line") from exc
    sentences = [line for line in lines if line]
    if len(sentences) < MIN_SAMPLE_SENTENCES:
        raise ValueError(
            f"AGREEMENT_SAMPLE={path} has {len(sentences)} texts; the int8 check needs at least "
            f"{MIN_SAMPLE_SENTENCES} (one text a line)"
        )
    return sentences


def layer_nodes(model_path):
    """Return {layer number: [names of its nodes]} of an exported transformer."""
    import onnx

    layers = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        match = LAYER.search(node.name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(node.name)
    return layers


def onnx_logits(model_path, tokenizer, sentences):
    """Return the logits of every sentence, in order (length-sorted batches, so padding stays low)."""
    import onnxruntime

    from tools.onnx_export import INPUT_NAMES

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True)["input_ids"]]
    order = sorted(range(len(sentences)), key=lengths.__getitem__)
    out = None
    for start in range(0, len(order), BATCH_SIZE):
        chunk = order[start : start + BATCH_SIZE]
        encoded = tokenizer([sentences[i] for i in chunk], padding=True, truncation=True, return_tensors="np")
        result = session.run(None, {name: encoded[name].astype(np.int64) for name in INPUT_NAMES})[0]
        if out is None:
            out = np.empty((len(sentences), result.shape[1]), dtype=np.float32)
        out[chunk] = result
    return out


def gated_int8(fp32_model, target, tokenizer, sentences, labels, max_flip_rate=MAX_FLIP_RATE, sample_name=SAMPLE.name):
    """Write the int8 model to `target` if one within `max_flip_rate` exists; return the decision.

    `labels` names the model's label indices (config.id2label). Prints each step, so the build log
    says what was measured.
    """
    from tools.onnx_export import quantized

    reference = onnx_logits(fp32_model, tokenizer, sentences)
    label, share = dominant_label(reference)
    if share > MAX_LABEL_SHARE:
        return one_label_choice(labels.get(label, label), share, len(sentences), sample_name)
    layers = layer_nodes(fp32_model)
    candidate = target.with_name("int8-candidate.onnx")

    def tried(kept):
        excluded = [name for layer in kept for name in layers[layer]]
        quantized(fp32_model, candidate, keep_fp32=excluded)
        return agreement(reference, onnx_logits(candidate, tokenizer, sentences))

    tries = [((), tried(()))]
    print(f"int8 check on {len(sentences)} texts ({sample_name}): {report(tries[-1][1])}", flush=True)
    if tries[-1][1].flip_rate > max_flip_rate and layers:
        some = slice(None, None, SENSITIVITY_STRIDE)
        ranking = most_sensitive(layer_errors(fp32_model, layers, tokenizer, sentences[some], reference[some]))
        for count in range(1, len(ranking) + 1):
            kept = tuple(ranking[:count])
            tries.append((kept, tried(kept)))
            print(f"int8 with {layers_text(kept)} in fp32: {report(tries[-1][1])}", flush=True)
            if tries[-1][1].flip_rate <= max_flip_rate:
                break
    decision = choice(tries, max_flip_rate, sample_name)
    if decision["precision"] == "int8":
        # The last candidate written is the winner: the loop stops at the first within the rate.
        candidate.replace(target)
    else:
        candidate.unlink(missing_ok=True)
    return decision


def layer_errors(fp32_model, layers, tokenizer, sentences, reference):
    """Return {layer: sensitivity} with only that layer quantized, on `sentences` (fp32's logits: `reference`)."""
    from tools.onnx_export import quantized

    alone = fp32_model.with_name("int8-one-layer.onnx")
    errors = {}
    try:
        for layer in sorted(layers):
            others = [name for other, names in layers.items() if other != layer for name in names]
            quantized(fp32_model, alone, keep_fp32=others)
            errors[layer] = sensitivity(reference, onnx_logits(alone, tokenizer, sentences))
    finally:
        alone.unlink(missing_ok=True)
    ranked = ", ".join(f"{layer}: {errors[layer]:.4f}" for layer in most_sensitive(errors, len(errors)))
    print(f"int8 sensitivity per layer (mean squared logit change, {len(sentences)} texts): {ranked}", flush=True)
    return errors


def report(result):
    """Return one build-log line's figures for an Agreement."""
    return (
        f"{result.flips} labels flip ({percent(result.flip_rate)}), largest score change {result.max_score_change:.3f}"
    )
