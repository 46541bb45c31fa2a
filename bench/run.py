"""make bench: the service measured side by side with its alternatives, in one run.

Systems, each with the same DistilBERT-sized model and the same SST-2 dev sentences sent as
single-text requests by wrk (closed loop) at several concurrencies, after a warm-up:
  in-process  the project's handler called directly, best batch size, every core
  torchserve  TorchServe's inference API with the project's handler and config
  service     the full service: nginx -> facade (Gunicorn) -> TorchServe
  seed        the seed's design: Flask + a transformers pipeline per request in Gunicorn
              sync workers, behind the same nginx
Accuracy of each precision mode is measured on SST-2 dev through TorchServe with the
trained stand-in model (skipped with --quick). Results: bench/results/<timestamp>.json,
bench/results/latest.md and bench/results/latest.png.
"""

import argparse
import gc
import json
import os
import platform
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as a script: the project and the handler's flat modules (as inside the .mar) importable.
sys.path[:0] = [str(PROJECT_DIR), str(PROJECT_DIR / "handler")]

from build_mar import BuildSettings, build  # noqa: E402

from bench.inprocess import in_process_point, loaded_handler  # noqa: E402
from bench.load import DEV_TSV, labelled_sentences, measure, write_bodies  # noqa: E402
from bench.report import headline, write_markdown, write_plot  # noqa: E402
from bench.timing_model import build_timing_model  # noqa: E402
from scripts.processes import http_status, start_group, stop_group, wait_until  # noqa: E402
from scripts.stack import StackSettings, down, running_groups, start_nginx, up  # noqa: E402
from scripts.torchserve import TorchServeSettings, start_torchserve, stop_torchserve  # noqa: E402

SHARED_DIR = PROJECT_DIR.parent / "shared"
STANDIN_DIR = Path(os.environ.get("BENCH_STANDIN_DIR") or SHARED_DIR / "models" / "minilm-sst2")
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
WORK_DIR = PROJECT_DIR / "run" / "bench"
CONCURRENCIES = (1, 8, 32, 64)


def free_port():
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_info():
    """Return what the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_at_start": os.getloadavg()[0],
    }


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


def archive(model_dir, store, precision):
    """Build the project's archive of `model_dir` in `precision` into `store`."""
    build(BuildSettings.from_env({"MODEL_DIR": str(model_dir), "MODEL_STORE": str(store), "PRECISION": precision}))


def in_process_points(model_dir, precision, texts, batch_sizes, duration_s):
    """Return the in-process points of one precision mode."""
    handler = loaded_handler(model_dir, precision)
    points = [in_process_point(handler, texts, size, duration_s) for size in batch_sizes]
    del handler
    gc.collect()
    return points


def service_points(model_dir, precision, bodies, durations):
    """Start the whole stack; load TorchServe directly, then the service through nginx."""
    work = WORK_DIR / f"stack-{precision}"
    settings = stack_settings(work, work / "model-store")
    archive(model_dir, settings.torchserve.model_store, precision)
    up(settings)
    try:
        groups = running_groups(settings)
        components = {
            "torchserve": [groups["torchserve"]],
            "facade": [pgid for name, pgid in groups.items() if name.startswith("facade")],
            "nginx": [groups["nginx"]],
        }
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
            for concurrency in CONCURRENCIES:
                point = measure(url, bodies, concurrency, durations["point"], watched, durations["warmup"])
                points.append({"system": system, "precision": precision, **point})
                print(
                    f"  {system:<10} {precision} c={concurrency:<3} {point['requests_per_s']:>7.1f} req/s "
                    f"p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms errors {point['errors']}",
                    flush=True,
                )
        return points
    finally:
        down(settings, quiet=True)


def seed_points(model_dir, bodies, durations):
    """Run the seed's design (Flask + pipeline per request, 2 sync workers) behind nginx."""
    work = WORK_DIR / "seed"
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    env = {**os.environ, "MODEL_DIR": str(model_dir), "SEED_TORCH_THREADS": "1"}
    seed = start_group(
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
            "bench.seed_app:create_app()",
        ],
        env=env,
        log_path=work / "logs" / "seed.log",
        cwd=PROJECT_DIR,
    )
    settings = StackSettings(
        http_port=free_port(), replicas=1, facade_base_port=port, run_dir=work / "run", log_dir=work / "logs"
    )
    nginx = start_nginx(settings)
    try:
        # A GET on the seed's POST-only route answers 405 once a worker has loaded its pipeline.
        wait_until(lambda: http_status(settings.url) == 405, timeout_s=120, what="the seed app", log_path=work / "logs")
        points = []
        for concurrency in CONCURRENCIES:
            point = measure(
                settings.url,
                bodies,
                concurrency,
                durations["point"],
                {"seed": [seed.pid], "nginx": [nginx.pid]},
                durations["warmup"],
            )
            points.append({"system": "seed", "precision": "fp32", **point})
            print(
                f"  seed       fp32 c={concurrency:<3} {point['requests_per_s']:>7.1f} req/s "
                f"p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms errors {point['errors']}",
                flush=True,
            )
        return points
    finally:
        stop_group(nginx.pid)
        stop_group(seed.pid)
        nginx.wait()
        seed.wait()


def accuracy(precisions, labelled):
    """Return SST-2 dev accuracy (%) through TorchServe per precision, with the trained stand-in."""
    import requests

    sentences = [sentence for sentence, _ in labelled]
    gold = ["POSITIVE" if label else "NEGATIVE" for _, label in labelled]
    scores = {}
    for precision in precisions:
        work = WORK_DIR / f"accuracy-{precision}"
        ts = stack_settings(work, work / "model-store").torchserve
        archive(STANDIN_DIR, ts.model_store, precision)
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
        scores[precision] = round(100 * sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold), 2)
        print(f"  accuracy {precision}: {scores[precision]:.2f}%", flush=True)
    return scores


def parse_args(argv):
    """Return the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fp32 only, short points, no accuracy (< 3 min)")
    parser.add_argument("--precisions", default="fp32,bf16,int8", help="precision modes to measure")
    return parser.parse_args(argv)


def main(argv=None):
    """Run every measurement and write the results."""
    args = parse_args(argv)
    precisions = ["fp32"] if args.quick else args.precisions.split(",")
    durations = (
        {"point": 5, "warmup": 2, "in_process": 4} if args.quick else {"point": 15, "warmup": 5, "in_process": 8}
    )
    batch_sizes = (1, 16, 32) if args.quick else (1, 8, 16, 32, 64)
    if not (STANDIN_DIR / "vocab.txt").is_file():
        sys.exit(f"error: the timing model needs the uncased vocabulary from {STANDIN_DIR} (BENCH_STANDIN_DIR)")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timing_model = build_timing_model(STANDIN_DIR, PROJECT_DIR / "models" / "timing-distilbert")
    labelled = labelled_sentences()
    texts = [sentence for sentence, _ in labelled]
    bodies = write_bodies(texts, WORK_DIR / "bodies.jsonl")
    results = {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "quick": args.quick,
        "machine": machine_info(),
        "durations_s": durations,
        "in_process": {},
        "points": [],
        "accuracy": {},
    }
    for precision in precisions:
        print(f"in-process {precision} ...", flush=True)
        results["in_process"][precision] = in_process_points(
            timing_model, precision, texts, batch_sizes, durations["in_process"]
        )
        print(f"  {results['in_process'][precision]}", flush=True)
        print(f"stack {precision} ...", flush=True)
        results["points"] += service_points(timing_model, precision, bodies, durations)
    print("seed design ...", flush=True)
    results["points"] += seed_points(timing_model, bodies, durations)
    if not args.quick and DEV_TSV.is_file():
        print("accuracy ...", flush=True)
        results["accuracy"] = accuracy(precisions, labelled)
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
