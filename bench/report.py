"""Turn one benchmark run into headline ratios, a markdown table and a plot."""

ACCURACY_BUDGET_POINTS = 0.5  # a precision mode may cost at most this much SST-2 dev accuracy


def point(results, system, precision, concurrency):
    """Return the measured point, or None."""
    return next(
        (
            p
            for p in results["points"]
            if (p["system"], p["precision"], p["concurrency"]) == (system, precision, concurrency)
        ),
        None,
    )


def best_in_process(results, precision):
    """Return the fastest in-process point (sentences/s) of a precision."""
    return max(results["in_process"][precision], key=lambda p: p["sentences_per_s"])


def accurate_precisions(results):
    """Return the precisions whose accuracy is within budget of fp32 (fp32 alone without figures)."""
    accuracy = results.get("accuracy") or {}
    if "fp32" not in accuracy:
        return ["fp32"]
    return [p for p, value in accuracy.items() if accuracy["fp32"] - value <= ACCURACY_BUDGET_POINTS]


def headline(results):
    """Return the ratios the targets are stated in, per precision where it applies."""
    ratios = {}
    for precision in results["in_process"]:
        service = [p for p in results["points"] if p["system"] == "service" and p["precision"] == precision]
        best_service = max(service, key=lambda p: p["requests_per_s"])
        ratios[f"service_best_vs_in_process_{precision}"] = round(
            best_service["requests_per_s"] / best_in_process(results, precision)["sentences_per_s"], 2
        )
        at32, direct32 = point(results, "service", precision, 32), point(results, "torchserve", precision, 32)
        ratios[f"service_vs_torchserve_c32_{precision}"] = round(at32["requests_per_s"] / direct32["requests_per_s"], 2)
    seed32 = point(results, "seed", "fp32", 32)["requests_per_s"]
    ratios["service_vs_seed_c32_fp32"] = round(point(results, "service", "fp32", 32)["requests_per_s"] / seed32, 2)
    candidates = [p for p in accurate_precisions(results) if p in results["in_process"]]
    fastest = max(candidates, key=lambda p: point(results, "service", p, 32)["requests_per_s"])
    ratios["fastest_accurate_precision"] = fastest
    ratios["service_vs_seed_c32_fastest_accurate"] = round(
        point(results, "service", fastest, 32)["requests_per_s"] / seed32, 2
    )
    batch1 = next(p for p in results["in_process"]["fp32"] if p["batch_size"] == 1)
    ratios["c1_p50_ms_service_fp32"] = point(results, "service", "fp32", 1)["p50_ms"]
    ratios["c1_p50_ms_in_process_batch1_fp32"] = batch1["p50_ms_per_batch"]
    ratios["c1_p50_overhead_ms"] = round(ratios["c1_p50_ms_service_fp32"] - batch1["p50_ms_per_batch"], 2)
    ratios["errors_total"] = sum(p["errors"] for p in results["points"])
    return ratios


def resources_cell(resources):
    """Return 'name cpu/rss' pairs of one point, compactly."""
    return "; ".join(f"{name} {r['cpu_cores']:.2f} cores {r['peak_rss_mb']:.0f} MB" for name, r in resources.items())


def write_markdown(results, path):
    """Write the headline, the in-process limits and every point as markdown tables."""
    machine = results["machine"]
    lines = [
        f"Run {results['timestamp']}{' (quick)' if results['quick'] else ''} on {machine['cpu']}, "
        f"{machine['cores']} cores, {machine['memory_gb']} GiB, Python {machine['python']}, torch {machine['torch']}; "
        f"load average at start {machine['load_avg_at_start']:.2f}. Model: DistilBERT-sized, random weights; "
        f"requests: single SST-2 dev sentences; {results['durations_s']['point']} s per point after "
        f"{results['durations_s']['warmup']} s warm-up.",
        "",
        "| headline | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in results["headline"].items()),
        "",
        "| in-process | batch | sentences/s | p50 ms per batch |",
        "|---|---|---|---|",
    ]
    for precision, points in results["in_process"].items():
        lines += [
            f"| {precision} | {p['batch_size']} | {p['sentences_per_s']} | {p['p50_ms_per_batch']} |" for p in points
        ]
    if results.get("accuracy"):
        lines += ["", "| precision | SST-2 dev accuracy (stand-in model, through TorchServe) |", "|---|---|"]
        lines += [f"| {precision} | {value:.2f}% |" for precision, value in results["accuracy"].items()]
    lines += [
        "",
        "| system | precision | concurrency | req/s = sentences/s | p50 ms | p95 ms | p99 ms | errors "
        "| CPU and peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['system']} | {p['precision']} | {p['concurrency']} | {p['requests_per_s']} | {p['p50_ms']:.1f} | "
        f"{p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} | {resources_cell(p['resources'])} |"
        for p in results["points"]
    ]
    path.write_text("\n".join(lines) + "\n")


def write_plot(results, path):
    """Plot throughput and p99 latency against concurrency, one line per system and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = sorted({(p["system"], p["precision"]) for p in results["points"]})
    for system, precision in series:
        points = sorted(
            (p for p in results["points"] if (p["system"], p["precision"]) == (system, precision)),
            key=lambda p: p["concurrency"],
        )
        label = f"{system} {precision}"
        throughput.plot(
            [p["concurrency"] for p in points], [p["requests_per_s"] for p in points], marker="o", label=label
        )
        tail.plot([p["concurrency"] for p in points], [p["p99_ms"] for p in points], marker="o", label=label)
    for precision in results["in_process"]:
        throughput.axhline(best_in_process(results, precision)["sentences_per_s"], linestyle=":", linewidth=1)
    throughput.set(xscale="log", xlabel="concurrent clients", ylabel="sentences / s", title="Throughput")
    tail.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)", title="p99 latency")
    throughput.legend(fontsize=7)
    figure.suptitle(f"{results['machine']['cores']} cores; dotted: in-process limit per precision", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
