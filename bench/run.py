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
In-process figures are whole passes over all 872 sentences (the median of --passes, 3). Each load
point runs at least 20 x its p50 and the floor (15 s), after its warm-up, and starts once the
previous point's abandoned requests are done; one that cannot within the cap is INVALID. Only 2xx
answers count as throughput. The service of each stack mode and the original design then take
turns at concurrency 32, ROUNDS times each, in one run (both running, only one loaded at a time):
the ratio is of their medians, and the range is kept.
Accuracy of each mode is measured on SST-2 dev through TorchServe with the trained test model
(skipped with --quick). Results: bench/results/<timestamp>.json, bench/results/latest.md and
bench/results/latest.png. --tune sweeps the batching settings instead (bench/tune.py).
"""

import argparse
import dataclasses
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
from bench.modes import Mode, default_mode, handler_runtimes, int8_mode, offered_modes
from bench.report import headline, write_markdown, write_plot
from bench.serving import (
    CONCURRENCIES,
    PROJECT_DIR,
    RESULTS_DIR,
    WORK_DIR,
    archive,
    print_point,
    service_components,
    stack_points,
)
from stack.launcher import StackSettings, down, start_nginx, up
from stack.models import TEST_MODEL_DIR, timing_model
from stack.private import free_port, private_stack, private_torchserve
from stack.processes import http_status, start_group, stop_group, wait_until
from stack.torchserve import start_torchserve, stop_torchserve

FULL_RULE = PointRule(floor_s=15, p50_factor=20, cap_s=180, warmup_s=5)
# Quick: the same 20 x p50 rule with a 5 s floor and a 45 s cap; a check that it all runs.
QUICK_RULE = PointRule(floor_s=5, p50_factor=20, cap_s=45, warmup_s=2)
# The service and the original design take turns at this concurrency, ROUNDS times each.
TURN_CONCURRENCY = 32
ROUNDS = 3
PASSES = 3


def extracted_archive(model_dir, mode):
    """Build the archive of `mode` and unpack it as TorchServe would; return the directory."""
    work = WORK_DIR / f"in-process-{mode.runtime}-{mode.precision}"
    built = archive(model_dir, work / "model-store", mode)
    target = work / "model"
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(built) as mar:
        mar.extractall(target)
    return target


def in_process_points(model_dir, mode, texts, batch_sizes, passes):
    """Return the in-process points of one mode: each batch size, then batch 32 sorted by length.

    The handler loads what the archive holds (an exported ONNX model, say), as in TorchServe.
    """
    handler = loaded_handler(extracted_archive(model_dir, mode), mode)
    points = [in_process_point(handler, texts, size, passes) for size in batch_sizes]
    points.append(in_process_point(handler, texts, 32, passes, sort_by_length=True))
    del handler
    gc.collect()
    return points


def service_points(model_dir, mode, bodies, rule, original, rounds):
    """Start the whole stack in `mode`; load TorchServe directly, then the service through nginx;
    then the service and the (running) original design in turns at concurrency 32.

    Returns (points, {"service": [points], "original": [points]} of the turns).
    """
    work = WORK_DIR / f"stack-{mode.runtime}-{mode.precision}"
    shutil.rmtree(work / "logs", ignore_errors=True)
    settings = private_stack(work)
    archive(model_dir, settings.torchserve.model_store, mode)
    up(settings)
    try:
        points = stack_points(settings, mode, bodies, rule)
        turns = {"service": [], "original": []}
        components = service_components(settings)
        # The turns are a headline: even a quick run gives them the full cap, so that the original
        # design's p50 of seconds at c=32 still gets its 20 x p50.
        rule = dataclasses.replace(rule, cap_s=max(rule.cap_s, FULL_RULE.cap_s))
        for turn in range(rounds):
            print(f"  turn {turn + 1} of {rounds} at c={TURN_CONCURRENCY}:", flush=True)
            point = measure(settings.url, bodies, TURN_CONCURRENCY, rule, components, settings.torchserve.metrics_url)
            turns["service"].append({"system": "service", "mode": mode.name, **point})
            print_point("service", mode.name, point)
            point = measure(original.url, bodies, TURN_CONCURRENCY, rule, original.components)
            turns["original"].append({"system": "original", "mode": "torch fp32", **point})
            print_point("original", "torch fp32", point)
        return points, turns
    finally:
        down(settings, quiet=True)


class OriginalDesign:
    """The original design (Flask + pipeline per request, 2 sync workers) behind nginx, running."""

    def __init__(self, model_dir):
        work = WORK_DIR / "original"
        port = free_port()
        gunicorn = Path(sys.executable).parent / "gunicorn"
        env = {**os.environ, "MODEL_DIR": str(model_dir), "ORIGINAL_TORCH_THREADS": "1"}
        command = [str(gunicorn), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "--timeout", "120"]
        self.process = start_group(
            [*command, "bench.original_app:create_app()"],
            env=env,
            log_path=work / "logs" / "original.log",
            cwd=PROJECT_DIR,
        )
        settings = StackSettings(
            http_port=free_port(), replicas=1, facade_base_port=port, run_dir=work / "run", log_dir=work / "logs"
        )
        self.nginx = start_nginx(settings)
        self.url = settings.url
        self.components = {"original": [self.process.pid], "nginx": [self.nginx.pid]}
        # A GET on the POST-only route answers 405 once a worker has loaded its pipeline.
        logs = work / "logs"
        try:
            wait_until(lambda: http_status(self.url) == 405, timeout_s=120, what="the original design", log_path=logs)
        except BaseException:
            self.stop()
            raise

    def points(self, bodies, rule):
        """Return the original design's load points at every concurrency."""
        points = []
        for concurrency in CONCURRENCIES:
            point = measure(self.url, bodies, concurrency, rule, self.components)
            points.append({"system": "original", "mode": "torch fp32", **point})
            print_point("original", "torch fp32", point)
        return points

    def stop(self):
        """Stop nginx and the Gunicorn workers."""
        for process in (self.nginx, self.process):
            stop_group(process.pid)
            process.wait()


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
        "--quick",
        action="store_true",
        help="default mode and int8 only, batch 1 and 32, 5 s floor, no accuracy (minutes)",
    )
    parser.add_argument(
        "--modes",
        help="in-process modes, runtime-precision comma-separated (default: fp32 of every runtime, "
        "int8, torch-bf16 on CPUs with bf16 instructions)",
    )
    parser.add_argument(
        "--stack-modes", help="modes served through TorchServe and the service (default: fp32 of every runtime)"
    )
    parser.add_argument(
        "--passes", type=int, default=PASSES, help="whole passes over the sentences per in-process figure (median)"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="turns of service and original design at c=32")
    parser.add_argument("--tune", action="store_true", help="sweep batchSize, maxBatchDelay, workers x threads")
    return parser.parse_known_args(argv)


def chosen_modes(args, default):
    """Return (in-process modes, stack modes) for this run; the default mode always in both."""
    runtimes = handler_runtimes()
    if args.modes:
        in_process = [Mode.parse(text) for text in args.modes.split(",")]
    elif args.quick:
        in_process = [int8_mode(runtimes)]
    else:
        in_process = offered_modes(runtimes, has_fast_bf16(machine_info()["vector_extensions"]))
    if args.stack_modes:
        stacks = [Mode.parse(text) for text in args.stack_modes.split(",")]
    else:
        # int8 served too: the c=32 target against the original design has an int8 figure.
        fp32 = [] if args.quick else [Mode(runtime, "fp32") for runtime in runtimes]
        stacks = [*fp32, int8_mode(runtimes)]
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
        "passes": args.passes,
        "rounds": args.rounds,
        "default_mode": default.name,
        "in_process": {},
        "points": [],
        "turns": {},
        "accuracy": {},
    }
    for mode in in_process_modes:
        print(f"in-process {mode.name} ...", flush=True)
        points = in_process_points(timing_model_dir, mode, texts, batch_sizes, args.passes)
        results["in_process"][mode.name] = points
        for point in points:
            label = f"{point['batch_size']}{' sorted' if point['sorted'] else ''}"
            low, high = point["range_sentences_per_s"]
            print(
                f"  batch {label:<9} {point['sentences_per_s']:>7.1f} sentences/s (median of {point['passes']} "
                f"whole passes over {point['sentences']} sentences, {low}-{high}; steal {point['steal_share']})",
                flush=True,
            )
    print("the original design (kept running for the turns at c=32) ...", flush=True)
    original = OriginalDesign(timing_model_dir)
    try:
        for mode in stack_modes:
            print(f"stack {mode.name} ...", flush=True)
            points, turns = service_points(timing_model_dir, mode, bodies, rule, original, args.rounds)
            results["points"] += points
            results["turns"][mode.name] = turns
        print("the original design ...", flush=True)
        results["points"] += original.points(bodies, rule)
    finally:
        original.stop()
    if not args.quick and DEV_TSV.is_file():
        print("accuracy ...", flush=True)
        results["accuracy"] = accuracy(in_process_modes, labelled)
    results["headline"] = headline(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = json.dumps(results, indent=2)
    (RESULTS_DIR / f"{results['timestamp']}.json").write_text(document)
    # Beside latest.md and committed with it: the figures the docs quote, in full.
    (RESULTS_DIR / "latest.json").write_text(document)
    write_markdown(results, RESULTS_DIR / "latest.md")
    write_plot(results, RESULTS_DIR / "latest.png")
    print((RESULTS_DIR / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
