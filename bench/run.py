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
import socket
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as a script: the project and the tools importable (tools/packed.py adds the handler's modules).
sys.path[:0] = [str(PROJECT_DIR), str(PROJECT_DIR / "tools")]

from bench.inprocess import in_process_point, loaded_handler  # noqa: E402
from bench.load import DEV_TSV, PointRule, labelled_sentences, measure, write_bodies  # noqa: E402
from bench.machine import has_fast_bf16, machine_info  # noqa: E402
from bench.modes import Mode, default_mode, handler_runtimes, offered_modes  # noqa: E402
from bench.report import headline, write_markdown, write_plot  # noqa: E402
from build_mar import BuildSettings, build  # noqa: E402
from stack.launcher import StackSettings, down, running_groups, start_nginx, up  # noqa: E402
from stack.processes import http_status, start_group, stop_group, wait_until  # noqa: E402
from stack.timing_model import build_timing_model  # noqa: E402
from stack.torchserve import TorchServeSettings, start_torchserve, stop_torchserve  # noqa: E402

SHARED_DIR = PROJECT_DIR.parent / "shared"
TEST_MODEL_DIR = Path(os.environ.get("BENCH_STANDIN_DIR") or SHARED_DIR / "models" / "minilm-sst2")
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
WORK_DIR = PROJECT_DIR / "run" / "bench"
CONCURRENCIES = (1, 8, 32, 64)
FULL_RULE = PointRule(floor_s=15, p50_factor=20, cap_s=180, warmup_s=5)
# Quick: the same 20 x p50 rule with a 5 s floor and a 45 s cap; a check that it all runs.
QUICK_RULE = PointRule(floor_s=5, p50_factor=20, cap_s=45, warmup_s=2)
SYSTEM_NAMES = {
    "torchserve": "TorchServe direct",
    "service": "full service",
    "original": "the original design",
}


def free_port():
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_settings(work, store):
    """Return settings for a private native stack on free ports with the given model store."""
    run_dir, log_dir = work / "run", work / "logs"
    base = free_port()
    while http_status(f"http://127.0.0.1:{base + 1}/", timeout_s=0.2) is not None:
        base = free_port()
    return StackSettings(
        http_port=free_port(),
        replicas=2,
        facade_base_port=base,
        torchserve=TorchServeSettings(
            inference_port=free_port(),
            management_port=free_port(),
            metrics_port=free_port(),
            grpc_inference_port=free_port(),
            grpc_management_port=free_port(),
            model_store=store,
            run_dir=run_dir,
            log_dir=log_dir,
        ),
        run_dir=run_dir,
        log_dir=log_dir,
    )


def archive(model_dir, store, mode, model_config=None):
    """Build the project's archive of `model_dir` in `mode` into `store`; return its path.

    model_config: {key: value} to change in the packed model-config.yaml (batching settings).
    """
    env = {"MODEL_DIR": str(model_dir), "MODEL_STORE": str(store), **mode.build_env()}
    built = build(BuildSettings.from_env(env))
    if model_config:
        with_model_config(built, model_config)
    return built


def with_model_config(mar_path, changes):
    """Rewrite the model-config.yaml inside an archive with `changes` applied (handler: merged)."""
    staged = mar_path.with_suffix(".staged")
    with zipfile.ZipFile(mar_path) as source, zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "model-config.yaml":
                config = yaml.safe_load(data) or {}
                handler = {**(config.get("handler") or {}), **changes.get("handler", {})}
                config.update({key: value for key, value in changes.items() if key != "handler"})
                config["handler"] = handler
                data = yaml.safe_dump(config, sort_keys=False).encode()
            elif item.filename == "build-info.json":
                # No longer what `make mar` would build: a later plain build must not keep it.
                info = json.loads(data)
                info["fingerprint"] = f"{info.get('fingerprint')}+{json.dumps(changes, sort_keys=True)}"
                data = json.dumps(info, indent=2).encode()
            target.writestr(item, data)
    os.replace(staged, mar_path)


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


def print_point(system, mode_name, point):
    """Print one load point as it is measured."""
    figures = (
        f"{point['requests_per_s']:>7.1f} req/s p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms"
        if point["valid"]
        else f"INVALID ({point['invalid_reason']})"
    )
    batches = point.get("batches") or {}
    batch_note = f" mean batch {batches['mean_per_batch']}" if batches.get("mean_per_batch") else ""
    print(
        f"  {SYSTEM_NAMES[system]:<19} {mode_name:<10} c={point['concurrency']:<3} {figures} "
        f"errors {point['errors']} ({point['duration_s']:g} s){batch_note}",
        flush=True,
    )


def stack_points(settings, mode, bodies, rule, concurrencies=CONCURRENCIES):
    """Load TorchServe directly, then the service through nginx, of a running stack; return the points."""
    groups = running_groups(settings)
    components = {
        "torchserve": [groups["torchserve"]],
        "facade": [pgid for name, pgid in groups.items() if name.startswith("facade")],
        "nginx": [groups["nginx"]],
    }
    model_log = settings.torchserve.log_dir / "model_log.log"
    targets = (
        (
            "torchserve",
            f"{settings.torchserve.inference_url}/predictions/sentiment",
            {"torchserve": components["torchserve"]},
        ),
        ("service", settings.url, components),
    )
    points = []
    for system, url, watched in targets:
        for concurrency in concurrencies:
            point = measure(url, bodies, concurrency, rule, watched, model_log)
            points.append({"system": system, "mode": mode.name, **point})
            print_point(system, mode.name, point)
    return points


def service_points(model_dir, mode, bodies, rule, model_config=None, work=None):
    """Start the whole stack in `mode`; load TorchServe directly, then the service through nginx."""
    work = work or WORK_DIR / f"stack-{mode.runtime}-{mode.precision}"
    # A fresh log per stack: the batch histogram reads the handler's lines of each point.
    shutil.rmtree(work / "logs", ignore_errors=True)
    settings = stack_settings(work, work / "model-store")
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
        ts = stack_settings(work, work / "model-store").torchserve
        archive(TEST_MODEL_DIR, ts.model_store, mode)
        process = start_torchserve(ts)
        try:
            predicted = []
            for start in range(0, len(sentences), 32):
                response = requests.post(
                    f"{ts.inference_url}/predictions/sentiment",
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
    timing_model = build_timing_model(TEST_MODEL_DIR, PROJECT_DIR / "models" / "timing-distilbert")
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
        points = in_process_points(timing_model, mode, texts, batch_sizes, in_process_s)
        results["in_process"][mode.name] = points
        for point in points:
            label = f"{point['batch_size']}{' sorted' if point['sorted'] else ''}"
            print(f"  batch {label:<9} {point['sentences_per_s']:>7.1f} sentences/s", flush=True)
    for mode in stack_modes:
        print(f"stack {mode.name} ...", flush=True)
        results["points"] += service_points(timing_model, mode, bodies, rule)
    print("the original design ...", flush=True)
    results["points"] += original_points(timing_model, bodies, rule)
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
