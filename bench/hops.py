"""python -m bench.hops: where a lone request's time goes, hop by hop, at concurrency 1.

Starts a private stack in the default mode and loads each hop in turn with wrk at concurrency 1,
--rounds times (so that each hop sees the same state of a shared machine): TorchServe's inference
API, one facade directly, nginx in front of the facades. The handler alone is timed in-process at
batch 1 over every sentence, once before the rounds and once after. Each hop's cost is its median
p50 minus the one inside it. --max-batch-delay repacks the archive with another maxBatchDelay (ms).
Prints one table with the CPU, steal and load, and writes bench/results/hops-latest.json.
"""

import argparse
import itertools
import json
import statistics
import sys

from bench.inprocess import in_process_point, loaded_handler
from bench.load import PointRule, labelled_sentences, measure, write_bodies
from bench.machine import machine_info
from bench.modes import default_mode
from bench.run import extracted_archive
from bench.serving import RESULTS_DIR, WORK_DIR, archive, service_components
from stack.launcher import down, up
from stack.models import timing_model
from stack.private import private_stack

HOPS = ("torchserve", "facade", "nginx")
RULE = PointRule(floor_s=10, p50_factor=20, cap_s=30, warmup_s=2)


def hop_costs(p50s):
    """Return each hop's own cost in ms: its median p50 minus the median p50 of the hop inside it.

    `p50s`: {"handler": [ms...], "torchserve": [...], "facade": [...], "nginx": [...]}, inside first.
    """
    medians = {name: statistics.median(values) for name, values in p50s.items()}
    names = list(medians)
    costs = {names[0]: round(medians[names[0]], 2)}
    for inner, outer in itertools.pairwise(names):
        costs[outer] = round(medians[outer] - medians[inner], 2)
    return costs


def cpu_ms_per_request(point):
    """Return {component: CPU ms it spent per request} of a load point (less disturbed by other load than latency)."""
    requests = max(1, point["requests"])
    return {
        name: round(usage["cpu_cores"] * point["duration_s"] * 1000 / requests, 2)
        for name, usage in point["resources"].items()
    }


def handler_point(model_dir, mode, texts):
    """Return the handler's batch-1 point in-process, over one whole pass of `texts`."""
    handler = loaded_handler(extracted_archive(model_dir, mode), mode)
    return in_process_point(handler, texts, 1, 1)


def main(argv=None):
    """Measure every hop at concurrency 1 and print where the time goes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="turns of the three hops (3)")
    parser.add_argument("--max-batch-delay", type=int, help="maxBatchDelay (ms) packed into the archive")
    args = parser.parse_args(argv)
    mode = default_mode()
    model_dir = timing_model()
    texts = [sentence for sentence, _ in labelled_sentences()]
    bodies = write_bodies(texts, WORK_DIR / "bodies.jsonl")
    handler_points = [handler_point(model_dir, mode, texts)]
    p50s = {"handler": [handler_points[0]["p50_ms_per_batch"]], **{hop: [] for hop in HOPS}}
    points = []
    settings = private_stack(WORK_DIR / "hops")
    changes = {} if args.max_batch_delay is None else {"maxBatchDelay": args.max_batch_delay}
    archive(model_dir, settings.torchserve.model_store, mode, changes)
    up(settings)
    try:
        components = service_components(settings)
        urls = {
            "torchserve": settings.torchserve.predictions_url,
            "facade": f"http://127.0.0.1:{settings.facade_base_port}/",
            "nginx": settings.url,
        }
        for turn in range(args.rounds):
            for hop in HOPS:
                point = measure(urls[hop], bodies, 1, RULE, components)
                p50s[hop].append(point["p50_ms"])
                cpu = cpu_ms_per_request(point)
                points.append({"hop": hop, "turn": turn, "cpu_ms_per_request": cpu, **point})
                print(
                    f"  turn {turn + 1} {hop:<10} p50 {point['p50_ms']:.1f} ms errors {point['errors']} "
                    f"steal {point['steal_share']} load {point['load_avg']}; CPU ms per request {cpu}",
                    flush=True,
                )
    finally:
        down(settings, quiet=True)
    handler_points.append(handler_point(model_dir, mode, texts))
    p50s["handler"].append(handler_points[-1]["p50_ms_per_batch"])
    results = {
        "machine": machine_info(),
        "mode": mode.name,
        "model_config": changes,
        "p50_ms": p50s,
        "hop_ms": hop_costs(p50s),
        "handler_cpu_ms": [point["cpu_ms_per_batch"] for point in handler_points],
        "cpu_ms_per_request": {
            hop: {
                name: statistics.median(p["cpu_ms_per_request"][name] for p in points if p["hop"] == hop)
                for name in points[0]["cpu_ms_per_request"]
            }
            for hop in HOPS
        },
        "points": points,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "hops-latest.json").write_text(json.dumps(results, indent=2))
    machine = results["machine"]
    print(f"{machine['cpu']} ({', '.join(machine['vector_extensions'])}), {machine['cores']} cores; {mode.name}")
    for name, cost in results["hop_ms"].items():
        print(f"  {name:<10} {cost:>7.2f} ms   (p50s: {', '.join(f'{v:.1f}' for v in p50s[name])})")
    print(f"  handler CPU ms per sentence (in-process, every thread): {results['handler_cpu_ms']}")
    for hop, cpu in results["cpu_ms_per_request"].items():
        print(f"  CPU ms per request, load on {hop:<10}: {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
