"""What the benchmark and its tuning share: archives built in a mode, and the load points of a running stack."""

import json
import os
import zipfile
from pathlib import Path

import yaml

from bench.load import measure
from stack.launcher import running_groups
from stack.private import build_archive

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
WORK_DIR = PROJECT_DIR / "run" / "bench"
CONCURRENCIES = (1, 8, 32, 64)
SYSTEM_NAMES = {
    "torchserve": "TorchServe direct",
    "service": "full service",
    "original": "the original design",
}


def archive(model_dir, store, mode, model_config=None):
    """Build the project's archive of `model_dir` in `mode` into `store`; return its path.

    model_config: {key: value} to change in the packed model-config.yaml (batching settings).
    """
    built = build_archive(model_dir, store, **mode.build_env())
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


def print_point(system, mode_name, point):
    """Print one load point as it is measured."""
    figures = (
        f"{point['requests_per_s']:>7.1f} req/s p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms"
        if point["valid"]
        else f"INVALID ({point['invalid_reason']})"
    )
    batches = point.get("batches") or {}
    batch_note = f" mean batch {batches['mean_per_batch']}" if batches.get("mean_per_batch") else ""
    steal = point.get("steal_share")
    machine_note = f" steal {steal:.0%} load {point.get('load_avg')}" if steal is not None else ""
    print(
        f"  {SYSTEM_NAMES[system]:<19} {mode_name:<10} c={point['concurrency']:<3} {figures} "
        f"errors {point['errors']} ({point['duration_s']:g} s){batch_note}{machine_note}",
        flush=True,
    )


def service_components(settings):
    """Return {component: [process group IDs]} of a running stack: TorchServe, the facades, nginx."""
    groups = running_groups(settings)
    return {
        "torchserve": [groups["torchserve"]],
        "facade": [pgid for name, pgid in groups.items() if name.startswith("facade")],
        "nginx": [groups["nginx"]],
    }


def stack_points(settings, mode, bodies, rule, concurrencies=CONCURRENCIES):
    """Load TorchServe directly, then the service through nginx, of a running stack; return the points."""
    components = service_components(settings)
    targets = (
        (
            "torchserve",
            settings.torchserve.predictions_url,
            {"torchserve": components["torchserve"]},
        ),
        ("service", settings.url, components),
    )
    points = []
    for system, url, watched in targets:
        for concurrency in concurrencies:
            point = measure(url, bodies, concurrency, rule, watched, settings.torchserve.metrics_url)
            points.append({"system": system, "mode": mode.name, **point})
            print_point(system, mode.name, point)
    return points
