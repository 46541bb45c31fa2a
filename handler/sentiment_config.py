"""Handler options from the archive's model-config.yaml, validated once per worker.

Torch-free so the rules can be unit tested without a model. The `handler:` section of
model-config.yaml reaches the worker as `context.model_yaml_config["handler"]`.
"""

import os
from dataclasses import dataclass
from pathlib import Path

# Lets an operator who scales workers at run time re-split the cores without rebuilding
# the archive (each worker is a separate process with its own intra-op thread pool).
THREADS_ENV = "SENTIMENT_TORCH_THREADS"
# Where a container sees its own cgroup (Docker and Kubernetes give it a private cgroup namespace).
CGROUP_ROOT = "/sys/fs/cgroup"


class HandlerConfigError(ValueError):
    """model-config.yaml or the environment asks for something the handler cannot do."""


RUNTIMES = ("onnx", "torch")
PRECISIONS = ("fp32", "bf16", "int8")
OPTIONS = (
    "runtime",
    "threads",
    "max_length",
    "precision",
    "max_batch_tokens",
    "max_request_tokens",
    "batch_budget_tokens",
    "warmup_seconds",
)


@dataclass(frozen=True)
class HandlerOptions:
    """What the handler reads from model-config.yaml; the defaults here are the only ones."""

    threads: int
    max_length: int | None
    runtime: str = "onnx"
    precision: str = "fp32"
    max_batch_tokens: int = 1024
    max_request_tokens: int = 2048
    batch_budget_tokens: int = 1024
    warmup_seconds: int = 3


def available_cores(cgroup_root=CGROUP_ROOT):
    """Return the cores this process may use: its CPU affinity, capped by its container's CPU limit."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_root)
    return min(cores, limit) if limit else cores


def cgroup_cpu_limit(root=CGROUP_ROOT):
    """Return the whole CPUs the cgroup quota allows (at least 1), or None without a quota.

    A pod limited to 2 CPUs on a 64-core node sees 64 cores; 64 threads there would be throttled
    most of each period. Rounded down, as Go's automaxprocs does: a thread more than the quota
    pays for itself in throttling, not in speed.
    """
    root = Path(root)
    quota_period = _read_words(root / "cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
    if quota_period is None:
        for v1 in ("cpu", "cpu,cpuacct"):  # cgroup v1: -1 means no quota
            quota, period = _read_words(root / v1 / "cpu.cfs_quota_us"), _read_words(root / v1 / "cpu.cfs_period_us")
            if quota and period:
                quota_period = [*quota, *period]
                break
    if not quota_period or len(quota_period) != 2 or not all(w.lstrip("-").isdigit() for w in quota_period):
        return None
    quota, period = (int(word) for word in quota_period)
    return max(1, quota // period) if quota > 0 and period > 0 else None


def _read_words(path):
    try:
        return path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None


def positive_int(name, value):
    """Return `value` (an int, or digits from the environment) as an int >= 0, or raise naming it."""
    number = -1
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number < 0:
        raise HandlerConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return number


def option(section, name):
    """Return handler option `name` of a handler: section, or its default (HandlerOptions')."""
    return section.get(name, getattr(HandlerOptions, name))


def default_threads(yaml_config, cores):
    """Return cores / workers (at least 1), so workers do not fight over the same cores."""
    workers = positive_int("minWorkers", yaml_config.get("minWorkers", 1)) or 1
    return max(1, cores // workers)


def runtime_precision_problem(runtime, precision):
    """Return why `runtime` cannot run `precision` (None when it can); one rule for builder and worker."""
    if runtime not in RUNTIMES:
        return f"the runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}"
    if precision not in PRECISIONS:
        return f"the precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
    if runtime == "onnx" and precision == "bf16":
        # ONNX Runtime's CPU kernels have no bf16 matmuls; torch's autocast uses AMX where present.
        return "bf16 runs on the torch runtime only: choose runtime torch with bf16, or fp32/int8 with onnx"
    return None


def handler_options(yaml_config, environ=os.environ, cores=None):
    """Return the validated HandlerOptions of one worker."""
    yaml_config = yaml_config or {}
    section = yaml_config.get("handler") or {}
    if not isinstance(section, dict):
        raise HandlerConfigError("the handler: section of model-config.yaml must be a mapping")
    unknown = set(section) - set(OPTIONS)
    if unknown:
        raise HandlerConfigError(f"unknown handler option(s) in model-config.yaml: {sorted(unknown)}")
    threads = positive_int("handler.threads", section.get("threads", 0))
    if environ.get(THREADS_ENV):
        threads = positive_int(THREADS_ENV, environ[THREADS_ENV])
    if threads == 0:
        threads = default_threads(yaml_config, cores or available_cores())
    max_length = positive_int("handler.max_length", section.get("max_length", 0)) or None
    runtime = option(section, "runtime")
    if runtime not in RUNTIMES:
        raise HandlerConfigError(f"handler.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    precision = option(section, "precision")
    if precision == "auto":
        raise HandlerConfigError(
            "handler.precision auto is chosen by `make mar` (tools/build_mar.py), which packs fp32 or int8: "
            "build the archive with it, or name fp32, bf16 or int8"
        )
    if precision not in PRECISIONS:
        raise HandlerConfigError(f"handler.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    problem = runtime_precision_problem(runtime, precision)
    if problem:
        raise HandlerConfigError(f"handler.runtime {runtime!r} with handler.precision {precision!r}: {problem}")
    max_batch_tokens = positive_int("handler.max_batch_tokens", option(section, "max_batch_tokens"))
    if max_batch_tokens == 0:
        raise HandlerConfigError("handler.max_batch_tokens must be at least 1")
    warmup_seconds = positive_int("handler.warmup_seconds", option(section, "warmup_seconds"))
    # 0: no cost limit per request (and no token budget per batch).
    max_request_tokens = positive_int("handler.max_request_tokens", option(section, "max_request_tokens"))
    # 0: batches are not shaped (every queued request TorchServe hands over runs).
    batch_budget_tokens = positive_int("handler.batch_budget_tokens", option(section, "batch_budget_tokens"))
    return HandlerOptions(
        threads=threads,
        max_length=max_length,
        runtime=runtime,
        precision=precision,
        max_batch_tokens=max_batch_tokens,
        warmup_seconds=warmup_seconds,
        max_request_tokens=max_request_tokens,
        batch_budget_tokens=batch_budget_tokens,
    )
