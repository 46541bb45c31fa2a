"""make bench-int8: does static int8 keep SST-2 dev accuracy where dynamic int8 does not?

An experiment, not a serving mode. For each variant of the ONNX model:
  fp32            the exported model as is
  dynamic int8    weights int8 ahead of time, activations quantized per call (what PRECISION=int8 serves)
  static int8 ... weights per channel and activations int8 with ranges calibrated ahead of time on
                  SST-2 *train* sentences (never dev), QDQ format, with some nodes left in fp32
it reports SST-2 dev accuracy of the trained test model (MiniLM) and, for the rule in docs/performance.md
(a mode may lose at most 0.5 points), the change against fp32; and sentences/s at batch 1 and
batch 32 sorted by length on the DistilBERT-sized timing model, 2 intra-op threads (the median of
--passes whole passes over every dev sentence).
Which nodes stay fp32 is measured: first the sensitivity of each group of nodes (embeddings,
each transformer layer, the classifier head) quantized alone, then variants that keep the most
sensitive groups in fp32. Results: bench/results/int8-<timestamp>.json and int8-latest.md.
"""

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.inprocess import pass_figures
from bench.load import labelled_sentences
from bench.machine import machine_info
from stack.models import SST2_TRAIN as TRAIN_TSV
from stack.models import TEST_MODEL_DIR, timing_model
from tools.onnx_export import INPUT_NAMES, export_onnx, quantized
from tools.precision_gate import LAYER, MAX_ACCURACY_LOSS_POINTS

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORK_DIR = PROJECT_DIR / "run" / "bench" / "int8"
RESULTS_DIR = PROJECT_DIR / "bench" / "results"


def train_sentences(count, path=TRAIN_TSV, seed=0):
    """Return `count` SST-2 train sentences, drawn at random (the calibration set; never dev)."""
    rows = [line.split("\t")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    rng = np.random.default_rng(seed)
    return [rows[index] for index in rng.choice(len(rows), size=count, replace=False)]


def exported(model_dir, target):
    """Return `target`, the ONNX export of `model_dir` as `make mar` does it (once)."""
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model_dir, target)
    return target


def node_group(name):
    """Return the group of a node by its name: 'embeddings', 'layer N' or 'head' (pooler, classifier)."""
    match = LAYER.search(name)
    if match:
        return f"layer {match.group(1)}"
    if "embeddings" in name:
        return "embeddings"
    return "head"


def node_groups(model_path):
    """Return {group: [node names]} of an ONNX model."""
    import onnx

    groups = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        groups.setdefault(node_group(node.name), []).append(node.name)
    return groups


class Calibration:
    """Feeds calibration sentences one at a time (no padding: pads would widen the ranges)."""

    def __init__(self, tokenizer, sentences):
        self._encoded = iter([tokenizer(sentence, return_tensors="np") for sentence in sentences])

    def get_next(self):
        """Return the next input feed, or None when done (onnxruntime's CalibrationDataReader)."""
        encoded = next(self._encoded, None)
        if encoded is None:
            return None
        return {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}


def static_int8(source, target, tokenizer, sentences, keep_fp32=()):
    """Write a static int8 QDQ model of `source` (per-channel weights), leaving `keep_fp32` nodes alone."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._calibration = Calibration(tokenizer, sentences)

        def get_next(self):
            return self._calibration.get_next()

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # Transformer activations have outliers; MatMul inputs only keeps Add/LayerNorm/Softmax exact.
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=list(keep_fp32),
        extra_options={"MatMulConstBOnly": True},
    )
    return target


def dynamic_int8(source, target):
    """Write the dynamic int8 model: what the handler serves with runtime onnx, precision int8."""
    return quantized(source, target)


def session(model_path, threads=2):
    """Return an ONNX Runtime CPU session with every graph optimization on."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def length_sorted_batches(tokenizer, sentences, batch_size):
    """Return padded input feeds of `batch_size` neighbours in length order."""
    lengths = [len(ids) for ids in tokenizer(sentences)["input_ids"]]
    ordered = [sentences[index] for index in sorted(range(len(sentences)), key=lengths.__getitem__)]
    return [
        (start, ordered[start : start + batch_size], tokenizer(ordered[start : start + batch_size], padding=True))
        for start in range(0, len(ordered), batch_size)
    ]


def logits(model_session, tokenizer, sentences, batch_size=32):
    """Return the logits of every sentence, in order."""
    lengths = [len(ids) for ids in tokenizer(sentences)["input_ids"]]
    order = sorted(range(len(sentences)), key=lengths.__getitem__)
    out = np.empty((len(sentences), 2), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = tokenizer([sentences[index] for index in chunk], padding=True, return_tensors="np")
        feed = {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}
        out[chunk] = model_session.run(None, feed)[0]
    return out


def accuracy(model_path, tokenizer, labelled):
    """Return SST-2 dev accuracy (%) of an ONNX model."""
    predicted = logits(session(model_path), tokenizer, [sentence for sentence, _ in labelled]).argmax(axis=1)
    gold = np.array([label for _, label in labelled])
    return round(100 * float((predicted == gold).mean()), 2)


def sentences_per_s(model_path, tokenizer, sentences, batch_size, passes):
    """Return sentences/s over every one of `sentences` in length-sorted batches of `batch_size`: the
    median of `passes` whole passes (a run cut off by a clock would measure the shortest sentences only)."""
    model_session = session(model_path)
    batches = []
    for _, _, encoded in length_sorted_batches(tokenizer, sentences, batch_size):
        batches.append({name: np.asarray(encoded[name], dtype=np.int64) for name in INPUT_NAMES})
    model_session.run(None, batches[len(batches) // 2])
    pass_seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        for feed in batches:
            model_session.run(None, feed)
        pass_seconds.append(time.perf_counter() - started)
    return pass_figures(pass_seconds, len(sentences))["sentences_per_s"]


def sensitivity(fp32_path, tokenizer, calibration, probe, groups, work):
    """Return {group: mean squared logit error} with only that group quantized statically."""
    reference = logits(session(fp32_path), tokenizer, probe)
    every_node = [name for names in groups.values() for name in names]
    errors = {}
    for group, names in groups.items():
        keep = [name for name in every_node if name not in set(names)]
        path = static_int8(fp32_path, work / f"only-{group.replace(' ', '')}.onnx", tokenizer, calibration, keep)
        errors[group] = float(((logits(session(path), tokenizer, probe) - reference) ** 2).mean())
        print(f"  sensitivity {group:<10} {errors[group]:.5f}", flush=True)
    return errors


def markdown(results):
    """Return the experiment's table."""
    machine = results["machine"]
    lines = [
        f"Static int8 experiment {results['timestamp']} on {machine['cpu']} "
        f"({', '.join(machine['vector_extensions'])}), {machine['cores']} cores, onnxruntime "
        f"{machine['onnxruntime']}; calibration: {results['calibration_sentences']} SST-2 train sentences; "
        f"speed: DistilBERT-sized model, 2 threads (noisy unless the machine was quiet).",
        "",
        "| variant | kept in fp32 | SST-2 dev acc. (test model) | vs fp32 | within 0.5 | "
        "batch 1 sent/s | batch 32 sorted sent/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["variants"]:
        lines.append(
            f"| {row['variant']} | {', '.join(row['kept_fp32']) or '-'} | {row['accuracy']:.2f}% | "
            f"{row['change']:+.2f} | {'yes' if row['within_budget'] else 'no'} | {row.get('batch1', '')} | "
            f"{row.get('batch32_sorted', '')} |"
        )
    lines += ["", "Sensitivity (MSE of logits vs fp32 with only that group quantized, train sentences):", ""]
    lines += [f"- {group}: {error:.5f}" for group, error in results["sensitivity"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=300, help="SST-2 train sentences to calibrate on")
    parser.add_argument(
        "--passes", type=int, default=3, help="whole passes over the sentences per speed figure (median)"
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Run the experiment and write its table."""
    from transformers import AutoTokenizer

    args = parse_args(argv)
    labelled = labelled_sentences()
    texts = [sentence for sentence, _ in labelled]
    calibration = train_sentences(args.calibration)
    probe = train_sentences(args.calibration + 200)[args.calibration :]
    tokenizer = AutoTokenizer.from_pretrained(TEST_MODEL_DIR, local_files_only=True)
    work = WORK_DIR / "test-model"
    work.mkdir(parents=True, exist_ok=True)
    fp32 = exported(TEST_MODEL_DIR, work / "fp32.onnx")
    groups = node_groups(fp32)
    print("sensitivity per group (static int8 of that group alone) ...", flush=True)
    errors = sensitivity(fp32, tokenizer, calibration, probe, groups, work)
    ranked = sorted(errors, key=errors.get, reverse=True)
    layers = sorted((g for g in groups if g.startswith("layer")), key=lambda g: int(g.split()[1]))
    candidates = {
        "static int8, everything": [],
        "static int8, embeddings + head fp32": ["embeddings", "head"],
        "static int8, embeddings + head + first/last layer fp32": ["embeddings", "head", layers[0], layers[-1]],
        "static int8, 2 most sensitive groups fp32": ranked[:2],
        "static int8, 3 most sensitive groups fp32": ranked[:3],
    }
    variants = {"fp32": (fp32, []), "dynamic int8": (dynamic_int8(fp32, work / "dynamic.onnx"), [])}
    for index, (name, kept) in enumerate(candidates.items()):
        nodes = [node for group in kept for node in groups.get(group, [])]
        variants[name] = (static_int8(fp32, work / f"static-{index}.onnx", tokenizer, calibration, nodes), kept)
    rows = []
    for name, (path, kept) in variants.items():
        rows.append({"variant": name, "kept_fp32": kept, "accuracy": accuracy(path, tokenizer, labelled)})
        print(f"  {name}: {rows[-1]['accuracy']:.2f}%", flush=True)
    for row in rows:
        row["change"] = round(row["accuracy"] - rows[0]["accuracy"], 2)
        row["within_budget"] = -row["change"] <= MAX_ACCURACY_LOSS_POINTS
    print("speed on the DistilBERT-sized model ...", flush=True)
    timing_dir = timing_model()
    timing_tokenizer = AutoTokenizer.from_pretrained(timing_dir, local_files_only=True)
    timing_work = WORK_DIR / "timing-model"
    timing_fp32 = exported(timing_dir, timing_work / "fp32.onnx")
    timing_groups = node_groups(timing_fp32)
    for row in rows:
        if row["variant"] == "fp32":
            path = timing_fp32
        elif row["variant"] == "dynamic int8":
            path = dynamic_int8(timing_fp32, timing_work / "dynamic.onnx")
        else:
            # Same groups kept by name; the timing model's layers are its own (6 as well).
            nodes = [node for group in row["kept_fp32"] for node in timing_groups.get(group, [])]
            path = static_int8(timing_fp32, timing_work / "static.onnx", timing_tokenizer, calibration[:100], nodes)
        row["batch1"] = sentences_per_s(path, timing_tokenizer, texts, 1, args.passes)
        row["batch32_sorted"] = sentences_per_s(path, timing_tokenizer, texts, 32, args.passes)
        print(f"  {row['variant']}: batch 1 {row['batch1']}, batch 32 sorted {row['batch32_sorted']}", flush=True)
    results = {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine_info(),
        "calibration_sentences": len(calibration),
        "sensitivity": errors,
        "variants": rows,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"int8-{results['timestamp']}.json").write_text(json.dumps(results, indent=2))
    (RESULTS_DIR / "int8-latest.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
