"""Turn one benchmark run into headline ratios judged against the targets, markdown and a plot."""

import statistics

from tools.precision_gate import MAX_ACCURACY_LOSS_POINTS

# name: (comparison, target, what it measures); from issue 19's targets.
TARGETS = {
    "service_best_vs_ceiling": (
        ">=",
        0.9,
        "full service at its best concurrency / in-process ceiling (the best in-process figure, batch 1 "
        "included, whole passes), default mode",
    ),
    "service_vs_original_c32": (
        ">=",
        1.6,
        "full service / the original design at concurrency 32, fp32 (medians of the turns)",
    ),
    "service_vs_original_c32_int8": (
        ">=",
        2.5,
        "full service / the original design at concurrency 32, int8 (medians of the turns)",
    ),
    "c1_p50_overhead_ms": (
        "<=",
        6.0,
        "concurrency 1: full service p50 - in-process batch-1 p50 of the default mode (ms)",
    ),
    "service_c64_vs_c8": (">=", 1.0, "full service throughput at concurrency 64 / at concurrency 8"),
    "errors_total": ("<=", 0, "errors (timeouts, non-2xx, broken connections) over every point"),
}


class InvalidFigure(Exception):
    """A figure a headline needs is missing or comes from an invalid point."""


def point(results, system, mode, concurrency):
    """Return the valid point of `system` in `mode` at `concurrency`, or raise InvalidFigure."""
    found = next(
        (p for p in results["points"] if (p["system"], p.get("mode"), p["concurrency"]) == (system, mode, concurrency)),
        None,
    )
    if found is None:
        raise InvalidFigure(f"{system} {mode} at concurrency {concurrency} was not measured")
    if not found.get("valid", True):
        raise InvalidFigure(f"{system} {mode} at concurrency {concurrency} is invalid: {found['invalid_reason']}")
    return found


def in_process_figure(results, mode, batch_size, sort_by_length=False):
    """Return the in-process point of `mode` at `batch_size`, or raise InvalidFigure."""
    found = next(
        (
            p
            for p in results["in_process"].get(mode, [])
            if p["batch_size"] == batch_size and p.get("sorted", False) == sort_by_length
        ),
        None,
    )
    if found is None:
        raise InvalidFigure(f"in-process {mode} batch {batch_size} was not measured")
    return found


def ceiling_point(results, mode):
    """Return the in-process point of `mode` with the most sentences/s (any batch, sorted or not)."""
    points = results["in_process"].get(mode) or []
    if not points:
        raise InvalidFigure(f"in-process {mode} was not measured")
    return max(points, key=lambda p: p["sentences_per_s"])


def ceiling(results, mode):
    """Return the in-process ceiling of `mode` in sentences/s: its best figure, batch 1 included."""
    return ceiling_point(results, mode)["sentences_per_s"]


def turn_figures(turns):
    """Return the median and range of req/s of each side's turns, and the ratio of the medians.

    {"service": {"median", "range", "valid"}, "original": {...}, "ratio": service / original or None}
    """
    figures = {}
    for side in ("service", "original"):
        rates = [p["requests_per_s"] for p in turns.get(side, []) if p.get("valid", True)]
        figures[side] = {
            "median": round(statistics.median(rates), 1) if rates else None,
            "range": [min(rates), max(rates)] if rates else None,
            "valid": len(rates),
            "turns": len(turns.get(side, [])),
        }
    service, original = figures["service"]["median"], figures["original"]["median"]
    figures["ratio"] = round(service / original, 2) if service and original else None
    return figures


def turn_ratio(results, mode):
    """Return service / original design at the turns' concurrency in `mode`, or raise InvalidFigure."""
    turns = results.get("turns", {}).get(mode)
    if not turns:
        raise InvalidFigure(f"the service in {mode} did not take turns with the original design")
    figures = turn_figures(turns)
    for side in ("service", "original"):
        if figures[side]["valid"] < figures[side]["turns"]:
            raise InvalidFigure(f"{figures[side]['turns'] - figures[side]['valid']} {side} turn(s) in {mode} invalid")
    return figures["ratio"]


def judged(name, value):
    """Return a headline figure against its target: pass or miss, and by how much."""
    comparison, target, what = TARGETS[name]
    margin = value - target if comparison == ">=" else target - value
    return {
        "what": what,
        "value": value,
        "target": f"{comparison} {target}",
        "verdict": "pass" if margin >= 0 else "miss",
        # Positive: passed with this much to spare; negative: missed by this much.
        "margin": round(margin, 2),
    }


def invalid(name, reason):
    """Return a headline figure that could not be computed honestly."""
    comparison, target, what = TARGETS[name]
    return {"what": what, "value": None, "target": f"{comparison} {target}", "verdict": "INVALID", "reason": reason}


def headline_values(results):
    """Return {target name: a function computing its value (may raise InvalidFigure)}."""
    default = results["default_mode"]
    fp32 = default.split()[0] + " fp32"

    def service_best_vs_ceiling():
        service = [p for p in results["points"] if (p["system"], p.get("mode")) == ("service", default)]
        if not service:
            raise InvalidFigure(f"the service was not measured in {default}")
        bad = [p for p in service if not p.get("valid", True)]
        if bad:
            raise InvalidFigure(f"service {default} at concurrency {bad[0]['concurrency']} is invalid")
        return round(max(p["requests_per_s"] for p in service) / ceiling(results, default), 2)

    def service_vs_original_c32():
        return turn_ratio(results, fp32)

    def service_vs_original_c32_int8():
        return turn_ratio(results, default.split()[0] + " int8")

    def c1_p50_overhead_ms():
        batch1 = in_process_figure(results, default, 1)["p50_ms_per_batch"]
        return round(point(results, "service", default, 1)["p50_ms"] - batch1, 1)

    def service_c64_vs_c8():
        c8 = point(results, "service", default, 8)["requests_per_s"]
        return round(point(results, "service", default, 64)["requests_per_s"] / c8, 2)

    def errors_total():
        return sum(p["errors"] for p in all_points(results))

    return {
        "service_best_vs_ceiling": service_best_vs_ceiling,
        "service_vs_original_c32": service_vs_original_c32,
        "service_vs_original_c32_int8": service_vs_original_c32_int8,
        "c1_p50_overhead_ms": c1_p50_overhead_ms,
        "service_c64_vs_c8": service_c64_vs_c8,
        "errors_total": errors_total,
    }


def all_points(results):
    """Return every load point of a run: the sweeps and the turns at concurrency 32."""
    turns = [p for sides in results.get("turns", {}).values() for side in sides.values() for p in side]
    return results["points"] + turns


def headline(results):
    """Return every target's figure, judged: pass/miss with the margin, or INVALID with why."""
    figures = {}
    for name, compute in headline_values(results).items():
        try:
            figures[name] = judged(name, compute())
        except InvalidFigure as reason:
            figures[name] = invalid(name, str(reason))
    return figures


def accuracy_rows(results):
    """Return (mode, accuracy %, change vs fp32 of the same runtime, within budget) per mode."""
    accuracy = results.get("accuracy") or {}
    rows = []
    for mode, value in accuracy.items():
        reference = accuracy.get(mode.split()[0] + " fp32", accuracy.get("torch fp32"))
        change = None if reference is None else round(value - reference, 2)
        rows.append((mode, value, change, change is not None and -change <= MAX_ACCURACY_LOSS_POINTS))
    return rows


def headline_cell(figure):
    """Return the markdown cell of one judged figure."""
    if figure["verdict"] == "INVALID":
        return f"INVALID: {figure['reason']}"
    sign = "+" if figure["margin"] >= 0 else ""
    return f"**{figure['value']}** ({figure['verdict']}, {sign}{figure['margin']})"


def batches_cell(batches):
    """Return 'size x count' pairs of a batch-size histogram, compactly."""
    if not batches or not batches.get("batches"):
        return ""
    pairs = " ".join(f"{size}: {count}" for size, count in batches["histogram"].items())
    return f"{batches['batches']} batches, mean {batches['mean_per_batch']} requests; by size {pairs}"


def resources_cell(resources):
    """Return 'name cpu/rss' pairs of one point, compactly."""
    return "; ".join(f"{name} {r['cpu_cores']:.2f} cores {r['peak_rss_mb']:.0f} MB" for name, r in resources.items())


def point_cells(p):
    """Return the figure cells of one load point: INVALID instead of numbers when it is invalid."""
    if not p.get("valid", True):
        return ["INVALID", "—", "—", "—"]
    return [str(p["requests_per_s"]), f"{p['p50_ms']:.1f}", f"{p['p95_ms']:.1f}", f"{p['p99_ms']:.1f}"]


def machine_cell(p):
    """Return the machine's state during a point: steal share, busy share, load average."""
    steal, busy = p.get("steal_share"), p.get("busy_share")
    if steal is None:
        return ""
    busy_text = "" if busy is None else f", busy {busy:.0%}"
    return f"steal {steal:.1%}{busy_text}, load {p.get('load_avg')}"


def machine_line(results):
    """Return one sentence saying what the run measured on."""
    machine = results["machine"]
    extensions = ", ".join(machine.get("vector_extensions") or []) or "none listed"
    versions = ", ".join(f"{name} {machine[name]}" for name in ("torch", "onnxruntime") if machine.get(name))
    return (
        f"Run {results['timestamp']}{' (quick: not for the targets)' if results['quick'] else ''} on "
        f"{machine['cpu']} ({extensions}), {machine['cores']} cores, {machine['memory_gb']} GiB, "
        f"Python {machine['python']}, {versions}; load average at start {machine['load_avg_at_start']:.2f}; "
        f"took {results.get('elapsed_s', 0) / 60:.0f} min."
    )


def write_markdown(results, path):
    """Write the judged headline, the in-process figures, the turns, accuracy and every point as markdown tables."""
    rule = results["rule"]
    lines = [
        machine_line(results),
        f"Model: DistilBERT-sized, random weights; requests: single SST-2 dev sentences; in-process figures: "
        f"median of {results.get('passes')} whole passes over all sentences; each load point runs "
        f"at least {rule['p50_factor']:g} x its p50 and {rule['floor_s']:g} s (cap {rule['cap_s']:g} s) after "
        f"a {rule['warmup_s']:g} s warm-up; only 2xx answers count; default mode: {results['default_mode']}.",
        "",
        "| headline | measured (verdict, margin) | target |",
        "|---|---|---|",
        *(f"| {f['what']} | {headline_cell(f)} | {f['target']} |" for f in results["headline"].values()),
        "",
        "| in-process mode | batch | sentences/s (median) | slowest-fastest pass | passes x sentences "
        "| p50 ms per batch | steal |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, points in results["in_process"].items():
        lines += [
            f"| {mode} | {p['batch_size']}{' sorted by length' if p.get('sorted') else ''} | "
            f"{p['sentences_per_s']} | {p['range_sentences_per_s'][0]}-{p['range_sentences_per_s'][1]} | "
            f"{p['passes']} x {p['sentences']} | {p['p50_ms_per_batch']} | {p.get('steal_share')} |"
            for p in points
        ]
    if results.get("turns"):
        lines += [
            "",
            "| turns at concurrency 32 | service req/s: median (range) | original design req/s: median (range) "
            "| service / original |",
            "|---|---|---|---|",
        ]
        for mode, turns in results["turns"].items():
            figures = turn_figures(turns)
            cells = [
                f"{f['median']} ({f['range'][0]}-{f['range'][1]}, {f['valid']} of {f['turns']} valid)"
                if f["median"] is not None
                else "INVALID"
                for f in (figures["service"], figures["original"])
            ]
            lines.append(f"| {mode} | {cells[0]} | {cells[1]} | {figures['ratio']} |")
    if results.get("accuracy"):
        lines += ["", "| mode | SST-2 dev accuracy (test model, through TorchServe) | vs fp32 | ≤ 0.5 points |"]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {mode} | {value:.2f}% | {'' if change is None else f'{change:+.2f}'} | {'yes' if ok else 'no'} |"
            for mode, value, change, ok in accuracy_rows(results)
        ]
    lines += [
        "",
        "| system | mode | concurrency | 2xx/s = sentences/s | p50 ms | p95 ms | p99 ms | errors | s "
        "| machine | CPU and peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['system']} | {p.get('mode')} | {p['concurrency']} | {' | '.join(point_cells(p))} | {p['errors']} | "
        f"{p['duration_s']:g} | {machine_cell(p)} | {resources_cell(p['resources'])} |"
        for p in all_points(results)
    ]
    batched = [p for p in all_points(results) if p.get("batches")]
    if batched:
        lines += [
            "",
            "| batches TorchServe handed the handler (its sentiment_batch_requests histogram) | mode | concurrency "
            "| requests per batch |",
        ]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {p['system']} | {p['mode']} | {p['concurrency']} | {batches_cell(p['batches'])} |" for p in batched
        ]
    invalid_points = [p for p in all_points(results) if not p.get("valid", True)]
    if invalid_points:
        lines += ["", "Invalid points (no figures are given for them):", ""]
        lines += [f"- {p['system']} {p['mode']} c={p['concurrency']}: {p['invalid_reason']}" for p in invalid_points]
    path.write_text("\n".join(lines) + "\n")


def write_plot(results, path):
    """Plot throughput and p99 latency against concurrency per system and mode; ceilings dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(11, 4.4))
    series = sorted({(p["system"], p.get("mode")) for p in results["points"]})
    for system, mode in series:
        points = sorted(
            (p for p in results["points"] if (p["system"], p.get("mode")) == (system, mode) and p.get("valid", True)),
            key=lambda p: p["concurrency"],
        )
        label = "the original design" if system == "original" else f"{system} {mode}"
        style = {"linestyle": "--"} if system == "original" else {}
        concurrency = [p["concurrency"] for p in points]
        throughput.plot(concurrency, [p["requests_per_s"] for p in points], marker="o", label=label, **style)
        tail.plot(concurrency, [p["p99_ms"] for p in points], marker="o", label=label, **style)
    for index, mode in enumerate(results["in_process"]):
        try:
            value = ceiling(results, mode)
        except InvalidFigure:
            continue
        line = throughput.axhline(value, linestyle=":", linewidth=1, color=f"C{index % 10}")
        throughput.annotate(f"in-process {mode}", (1, value), fontsize=6, color=line.get_color(), va="bottom")
    concurrencies = sorted({p["concurrency"] for p in results["points"]})
    for axes in (throughput, tail):
        axes.set(xscale="log", xlabel="concurrent clients", xticks=concurrencies, xticklabels=concurrencies)
    throughput.set(ylabel="sentences / s", title="Throughput", ylim=(0, None))
    tail.set(yscale="log", ylabel="p99 latency (ms)", title="p99 latency")
    throughput.legend(fontsize=7)
    machine = results["machine"]
    figure.suptitle(
        f"{machine['cpu']}, {machine['cores']} cores; dotted: in-process ceiling (best batch) per mode; "
        "invalid points left out",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
