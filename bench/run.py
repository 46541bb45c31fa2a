"""make bench: the service measured side by side with its alternatives, in one run.

Systems, each with the same DistilBERT-sized model and the same SST-2 dev sentences sent as
single-text requests by wrk (closed loop) at several concurrencies, after a warm-up:
  in-process  the project's handler called directly, every core, per runtime and precision:
              batch 1, the batch sizes TorchServe may form, and batch 32 sorted by length (the
              ceiling no server can beat)
  torchserve  TorchServe's inference API with the project's handler and config
  service     the full service: nginx -> facade (Gunicorn) -> TorchServe
  original    the original design: Flask + a transformers pipeline per request in Gunicorn
              sync workers, behind the same nginx
Each point runs at least 20 x its p50 and the floor (15 s), after its warm-up, and starts once
the previous point's abandoned requests are done; one that cannot within the cap is INVALID.
Accuracy of each mode is measured on SST-2 dev through TorchServe with the trained test model
(skipped with --quick). Results: bench/results/<timestamp>.json, bench/results/latest.md and
bench/results/latest.png. --tune sweeps the batching settings instead (bench/tune.py).
"""

import argparse
import gc
import json
import os
import shutil
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from bench.inprocess import in_process_point, loaded_handler
from bench.load import DEV_TSV, PointRule, labelled_sentences, measure, write_bodies
from bench.machine import has_fast_bf16, machine_info
from bench.modes import Mode, default_mode, handler_runtimes, offered_modes
from bench.report import headline, write_markdown, write_plot
from bench.serving import CONCURRENCIES, PROJECT_DIR, RESULTS_DIR, WORK_DIR, archive, print_point, stack_points
from stack.launcher import StackSettings, down, start_nginx, up
from stack.models import TEST_MODEL_DIR, timing_model
from stack.private import free_port, private_stack, private_torchserve
from stack.processes import http_status, start_group, stop_group, wait_until
from stack.torchserve import start_torchserve, stop_torchserve

FULL_RULE = PointRule(floor_s=15, p50_factor=20, cap_s=180, warmup_s=5)
# Quick: the same 20 x p50 rule with a 5 s floor and a 45 s cap; a check that it all runs.
QUICK_RULE = PointRule(floor_s=5, p50_factor=20, cap_s=45, warmup_s=2)


def extracted_archive(model_dir, mode):
    """Build the archive of `mode` and unpack it as TorchServe would; return the directory."""
    work = WORK_DIR / f"in-process-{mode.runtime}-{mode.precision}"
    built = archive(model_dir, work / "model-store", mode)
    target = work / "model"
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(built) as mar:
        mar.extractall(target)
    return target


def in_process_points(model_dir, mode, texts, batch_sizes, duration_s):
    """Return the in-process points of one mode: each batch size, then batch 32 sorted by length.

    The handler loads what the archive holds (an exported ONNX model, say), as in TorchServe.
    """
    handler = loaded_handler(extracted_archive(model_dir, mode), mode)
    points = [in_process_point(handler, texts, size, duration_s) for size in batch_sizes]
    points.append(in_process_point(handler, texts, 32, duration_s, sort_by_length=True))
    del handler
    gc.collect()
    return points


def service_points(model_dir, mode, bodies, rule, model_config=None, work=None):
    """Start the whole stack in `mode`; load TorchServe directly, then the service through nginx."""
    work = work or WORK_DIR / f"stack-{mode.runtime}-{mode.precision}"
    # A fresh log per stack: the batch histogram reads the handler's lines of each point.
    shutil.rmtree(work / "logs", ignore_errors=True)
    settings = private_stack(work)
    archive(model_dir, settings.torchserve.model_store, mode, model_config)
    up(settings)
    try:
        return stack_points(settings, mode, bodies, rule)
    finally:
        down(settings, quiet=True)


def original_points(model_dir, bodies, rule):
    """Run the original design (Flask + pipeline per request, 2 sync workers) behind nginx."""
    work = WORK_DIR / "original"
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    env = {**os.environ, "MODEL_DIR": str(model_dir), "ORIGINAL_TORCH_THREADS": "1"}
    original = start_group(
        [
            str(gunicorn),
            "-w",
            "2",
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "bench.original_app:create_app()",
        ],
        env=env,
        log_path=work / "logs" / "original.log",
        cwd=PROJECT_DIR,
    )
    settings = StackSettings(
        http_port=free_port(), replicas=1, facade_base_port=port, run_dir=work / "run", log_dir=work / "logs"
    )
    nginx = start_nginx(settings)
    try:
        # A GET on the POST-only route answers 405 once a worker has loaded its pipeline.
        wait_until(
            lambda: http_status(settings.url) == 405, timeout_s=120, what="the original design", log_path=work / "logs"
        )
        points = []
        for concurrency in CONCURRENCIES:
            point = measure(settings.url, bodies, concurrency, rule, {"original": [original.pid], "nginx": [nginx.pid]})
            points.append({"system": "original", "mode": "torch fp32", **point})
            print_point("original", "torch fp32", point)
        return points
    finally:
        stop_group(nginx.pid)
        stop_group(original.pid)
        nginx.wait()
        original.wait()


def accuracy(modes, labelled):
    """Return SST-2 dev accuracy (%) through TorchServe per mode, with the trained test model."""
    import requests

    sentences = [sentence for sentence, _ in labelled]
    gold = ["POSITIVE" if label else "NEGATIVE" for _, label in labelled]
    scores = {}
    for mode in modes:
        work = WORK_DIR / f"accuracy-{mode.runtime}-{mode.precision}"
        ts = private_torchserve(work)
        archive(TEST_MODEL_DIR, ts.model_store, mode)
        process = start_torchserve(ts)
        try:
            predicted = []
            for start in range(0, len(sentences), 32):
                response = requests.post(
                    ts.predictions_url,
                    json={"texts": sentences[start : start + 32]},
                    timeout=120,
                )
                response.raise_for_status()
                predicted += [result["label"] for result in response.json()["results"]]
        finally:
            stop_torchserve(process.pid)
            process.wait()
        scores[mode.name] = round(100 * sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold), 2)
        print(f"  accuracy {mode.name}: {scores[mode.name]:.2f}%", flush=True)
    return scores


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="default mode and torch fp32 only, 5 s floor, no accuracy (minutes)"
    )
    parser.add_argument(
        "--modes",
        help="in-process modes, runtime-precision comma-separated (default: fp32 of every runtime, "
        "int8, torch-bf16 on CPUs with bf16 instructions)",
    )
    parser.add_argument(
        "--stack-modes", help="modes served through TorchServe and the service (default: fp32 of every runtime)"
    )
    parser.add_argument("--tune", action="store_true", help="sweep batchSize, maxBatchDelay, workers x threads")
    return parser.parse_known_args(argv)


def chosen_modes(args, default):
    """Return (in-process modes, stack modes) for this run; the default mode always in both."""
    runtimes = handler_runtimes()
    if args.modes:
        in_process = [Mode.parse(text) for text in args.modes.split(",")]
    elif args.quick:
        in_process = [Mode("torch", "fp32")]
    else:
        in_process = offered_modes(runtimes, has_fast_bf16(machine_info()["vector_extensions"]))
    if args.stack_modes:
        stacks = [Mode.parse(text) for text in args.stack_modes.split(",")]
    else:
        stacks = [] if args.quick else [Mode(runtime, "fp32") for runtime in runtimes]
    with_default = [default, *(mode for mode in in_process if mode != default)]
    return with_default, [default, *(mode for mode in stacks if mode != default)]


def main(argv=None):
    """Run every measurement and write the results."""
    args, rest = parse_args(argv)
    if args.tune:
        from bench.tune import main as tune_main

        return tune_main(rest + (["--quick"] if args.quick else []))
    if rest:
        sys.exit(f"error: unknown arguments {rest}")
    rule = QUICK_RULE if args.quick else FULL_RULE
    in_process_s = 4 if args.quick else 8
    batch_sizes = (1, 32) if args.quick else (1, 8, 16, 32, 64)
    default = default_mode()
    in_process_modes, stack_modes = chosen_modes(args, default)
    if not (TEST_MODEL_DIR / "vocab.txt").is_file():
        sys.exit(f"error: the timing model needs the uncased vocabulary from {TEST_MODEL_DIR} (BENCH_STANDIN_DIR)")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timing_model_dir = timing_model()
    labelled = labelled_sentences()
    texts = [sentence for sentence, _ in labelled]
    bodies = write_bodies(texts, WORK_DIR / "bodies.jsonl")
    results = {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "quick": args.quick,
        "machine": machine_info(),
        "rule": rule.__dict__,
        "default_mode": default.name,
        "in_process": {},
        "points": [],
        "accuracy": {},
    }
    for mode in in_process_modes:
        print(f"in-process {mode.name} ...", flush=True)
        points = in_process_points(timing_model_dir, mode, texts, batch_sizes, in_process_s)
        results["in_process"][mode.name] = points
        for point in points:
            label = f"{point['batch_size']}{' sorted' if point['sorted'] else ''}"
            print(f"  batch {label:<9} {point['sentences_per_s']:>7.1f} sentences/s", flush=True)
    for mode in stack_modes:
        print(f"stack {mode.name} ...", flush=True)
        results["points"] += service_points(timing_model_dir, mode, bodies, rule)
    print("the original design ...", flush=True)
    results["points"] += original_points(timing_model_dir, bodies, rule)
    if not args.quick and DEV_TSV.is_file():
        print("accuracy ...", flush=True)
        results["accuracy"] = accuracy(in_process_modes, labelled)
    results["headline"] = headline(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{results['timestamp']}.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, RESULTS_DIR / "latest.md")
    write_plot(results, RESULTS_DIR / "latest.png")
    print((RESULTS_DIR / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
