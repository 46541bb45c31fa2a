"""make bench-tune: choose batchSize, maxBatchDelay and workers x threads by measurement.

Each configuration is packed into the archive's model-config.yaml, served by a private stack,
and loaded through TorchServe directly and through the full service at concurrency 8, 32 and
64 under the benchmark's point rule. By default one setting at a time is varied from the
project's own (handler/model-config.yaml); --layouts/--batch-sizes/--delays give a full grid.
Results: bench/results/tune-<timestamp>.json and bench/results/tune-latest.md.
"""

import argparse
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import yaml

from bench.load import PointRule, labelled_sentences, write_bodies
from bench.machine import machine_info
from bench.modes import MODEL_CONFIG, Mode, default_mode
from bench.report import point_cells
from bench.serving import RESULTS_DIR, SYSTEM_NAMES, WORK_DIR, archive, stack_points, with_model_config
from stack.launcher import down, up
from stack.models import timing_model
from stack.private import private_stack

TUNE_CONCURRENCIES = (8, 32, 64)
TUNE_RULE = PointRule(floor_s=15, p50_factor=20, cap_s=90, warmup_s=5)
QUICK_TUNE_RULE = PointRule(floor_s=5, p50_factor=20, cap_s=30, warmup_s=2)


@dataclass(frozen=True)
class Batching:
    """One TorchServe batching configuration."""

    workers: int
    threads: int
    batch_size: int
    max_batch_delay_ms: int

    @property
    def name(self):
        """Return e.g. '1x2 b32 d2'."""
        return f"{self.workers}x{self.threads} b{self.batch_size} d{self.max_batch_delay_ms}"

    def model_config(self):
        """Return the model-config.yaml changes that select this configuration."""
        return {
            "minWorkers": self.workers,
            "maxWorkers": self.workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "handler": {"threads": self.threads},
        }


def parse_layout(text):
    """Return (workers, threads) of 'WxT'."""
    workers, _, threads = text.partition("x")
    if not (workers.isdigit() and threads.isdigit()):
        raise ValueError(f"a layout is workers x threads, e.g. 2x1, got {text!r}")
    return int(workers), int(threads)


def current_batching(cores, model_config=MODEL_CONFIG):
    """Return the project's batching settings (threads 0 = cores / workers, as the handler does)."""
    config = yaml.safe_load(model_config.read_text())
    workers = int(config.get("minWorkers", 1))
    threads = int((config.get("handler") or {}).get("threads", 0)) or max(1, cores // workers)
    return Batching(workers, threads, int(config["batchSize"]), int(config["maxBatchDelay"]))


def one_at_a_time(current, cores):
    """Return the current configuration and, one change each: the other core split, half and
    double the batch size, and a longer batch delay."""
    split = (cores, 1) if current.workers == 1 else (1, cores)
    variants = [
        current,
        Batching(*split, current.batch_size, current.max_batch_delay_ms),
        Batching(current.workers, current.threads, max(1, current.batch_size // 2), current.max_batch_delay_ms),
        Batching(current.workers, current.threads, current.batch_size, max(10, current.max_batch_delay_ms * 5)),
    ]
    return list(dict.fromkeys(variants))


def full_grid(layouts, batch_sizes, delays):
    """Return every combination of the given layouts, batch sizes and delays."""
    return [
        Batching(workers, threads, size, delay)
        for (workers, threads), size, delay in itertools.product(layouts, batch_sizes, delays)
    ]


def summary_rows(results):
    """Return one markdown row per configuration, system and concurrency."""
    rows = []
    for entry in results["configurations"]:
        for p in entry["points"]:
            batches = p.get("batches") or {}
            rows.append(
                f"| {entry['name']} | {SYSTEM_NAMES[p['system']]} | {p['concurrency']} | "
                f"{' | '.join(point_cells(p)[:2])} | {point_cells(p)[3]} | {p['errors']} | "
                f"{batches.get('mean_per_batch') or ''} |"
            )
    return rows


def write_tune_markdown(results, path):
    """Write the sweep as one table."""
    machine = results["machine"]
    lines = [
        f"Tune run {results['timestamp']} on {machine['cpu']} ({', '.join(machine['vector_extensions'])}), "
        f"{machine['cores']} cores, mode {results['mode']}. Configuration: workers x threads, batchSize (b), "
        "maxBatchDelay ms (d).",
        "",
        "| configuration | system | concurrency | req/s | p50 ms | p99 ms | errors | mean batch |",
        "|---|---|---|---|---|---|---|---|",
        *summary_rows(results),
    ]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s floor, 30 s cap, 2 s warm-up per point")
    parser.add_argument("--mode", help="runtime-precision to serve (default: the project's default)")
    parser.add_argument("--layouts", help="workers x threads, comma-separated (e.g. 1x2,2x1)")
    parser.add_argument("--batch-sizes", help="batchSize values, comma-separated")
    parser.add_argument("--delays", help="maxBatchDelay values in ms, comma-separated")
    return parser.parse_args(argv)


def main(argv=None):
    """Measure every configuration; print and write the table."""
    args = parse_args(argv)
    machine = machine_info()
    current = current_batching(machine["cores"])
    if args.layouts or args.batch_sizes or args.delays:
        configurations = full_grid(
            [parse_layout(text) for text in args.layouts.split(",")]
            if args.layouts
            else [(current.workers, current.threads)],
            [int(text) for text in args.batch_sizes.split(",")] if args.batch_sizes else [current.batch_size],
            [int(text) for text in args.delays.split(",")] if args.delays else [current.max_batch_delay_ms],
        )
    else:
        configurations = one_at_a_time(current, machine["cores"])
    mode = Mode.parse(args.mode) if args.mode else default_mode()
    rule = QUICK_TUNE_RULE if args.quick else TUNE_RULE
    timing_model_dir = timing_model()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies([sentence for sentence, _ in labelled_sentences()], WORK_DIR / "bodies.jsonl")
    started = time.monotonic()
    results = {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine,
        "mode": mode.name,
        "rule": rule.__dict__,
        "configurations": [],
    }
    work = WORK_DIR / "tune"
    built = archive(timing_model_dir, work / "built", mode)
    for batching in configurations:
        print(f"{batching.name} ...", flush=True)
        shutil.rmtree(work / "logs", ignore_errors=True)
        settings = private_stack(work)
        settings.torchserve.model_store.mkdir(parents=True, exist_ok=True)
        served = shutil.copyfile(built, settings.torchserve.model_store / built.name)
        with_model_config(served, batching.model_config())
        up(settings)
        try:
            points = stack_points(settings, mode, bodies, rule, TUNE_CONCURRENCIES)
        finally:
            down(settings, quiet=True)
        results["configurations"].append({"name": batching.name, **batching.__dict__, "points": points})
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"tune-{results['timestamp']}.json").write_text(json.dumps(results, indent=2))
    write_tune_markdown(results, RESULTS_DIR / "tune-latest.md")
    print((RESULTS_DIR / "tune-latest.md").read_text())
    return 0
