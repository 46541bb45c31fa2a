"""The benchmark's rules: point validity, CPU flags, batch histograms, targets judged."""

from pathlib import Path

import pytest
import yaml

from bench.abuse import failures, texts_served
from bench.abuse import report as abuse_report
from bench.inprocess import batches_of, pass_figures
from bench.load import (
    WRK_TIMEOUT_S,
    PointRule,
    batch_figures,
    busy_share,
    histogram_snapshot,
    served_and_errors,
    steal_share,
)
from bench.machine import VECTOR_FLAGS, has_fast_bf16, vector_extensions
from bench.modes import Mode, default_mode, offered_modes
from bench.report import ceiling, headline, turn_figures, write_markdown
from bench.tune import Batching, one_at_a_time, parse_layout

from sentiment_config import handler_options

MODEL_CONFIG = Path(__file__).resolve().parents[2] / "handler" / "model-config.yaml"
EPYC_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""
XEON_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""


def test_a_point_runs_the_floor_when_latency_is_short():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    assert rule.duration_s(p50_ms=40) == 15


def test_a_slow_point_runs_twenty_times_its_p50():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    assert rule.duration_s(p50_ms=3700) == 74


def test_a_point_never_runs_past_the_cap():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    assert rule.duration_s(p50_ms=30_000) == 180


def test_a_run_where_nothing_finished_asks_for_the_cap():
    rule = PointRule(floor_s=5, p50_factor=20, cap_s=45)
    assert rule.next_duration_s(concurrency=64, requests=0, ran_s=2, p50_ms=0) == 45


def test_a_short_run_plans_by_littles_law_when_its_p50_only_saw_the_fast_requests():
    rule = PointRule(floor_s=5, p50_factor=20, cap_s=180)
    # 64 clients, 32 answers in 2 s: each client waits ~4 s, whatever the p50 of those 32 says.
    assert rule.next_duration_s(concurrency=64, requests=32, ran_s=2, p50_ms=900) == 80


def test_a_point_long_enough_for_its_latency_is_valid():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    assert rule.invalid_reason(duration_s=74, p50_ms=3700, requests=1200) is None


def test_a_point_shorter_than_twenty_p50s_is_invalid_and_says_why():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    reason = rule.invalid_reason(duration_s=180, p50_ms=12_000, requests=900)
    assert "20 x p50 (12.0 s)" in reason


def test_a_point_under_the_floor_is_invalid():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    assert "floor" in rule.invalid_reason(duration_s=5, p50_ms=10, requests=400)


def test_a_point_where_nothing_completed_is_invalid_whatever_its_p50():
    rule = PointRule(floor_s=15, p50_factor=20, cap_s=180)
    assert "no request completed" in rule.invalid_reason(duration_s=15, p50_ms=0, requests=0)


def test_wrk_waits_longer_than_every_timeout_of_the_service():
    model_config = yaml.safe_load(MODEL_CONFIG.read_text())
    assert model_config["responseTimeout"] < WRK_TIMEOUT_S


def test_vector_extensions_of_an_avx2_only_cpu():
    assert vector_extensions(EPYC_CPUINFO) == ["avx", "avx2", "fma"]


def test_vector_extensions_of_a_cpu_with_avx512_and_amx():
    # Every flag the benchmark reports but avx_vnni (this Xeon has the AVX-512 one), in its order.
    assert vector_extensions(XEON_CPUINFO) == [flag for flag in VECTOR_FLAGS if flag != "avx_vnni"]


def test_bf16_is_only_offered_where_the_cpu_has_bf16_instructions():
    assert not has_fast_bf16(vector_extensions(EPYC_CPUINFO))
    assert has_fast_bf16(vector_extensions(XEON_CPUINFO))
    assert Mode("torch", "bf16") not in offered_modes(("onnx", "torch"), fast_bf16=False)
    assert Mode("torch", "bf16") in offered_modes(("onnx", "torch"), fast_bf16=True)


def test_int8_is_measured_with_onnx_runtime_when_the_handler_offers_it():
    assert offered_modes(("onnx", "torch"), fast_bf16=False) == [
        Mode("onnx", "fp32"),
        Mode("torch", "fp32"),
        Mode("onnx", "int8"),
    ]


def test_mode_parses_runtime_and_precision():
    assert Mode.parse("onnx-int8") == Mode("onnx", "int8")
    with pytest.raises(ValueError, match="runtime-precision"):
        Mode.parse("int8")


def test_a_model_config_without_a_handler_section_is_measured_in_the_handlers_default_mode(tmp_path):
    config = tmp_path / "model-config.yaml"
    config.write_text("minWorkers: 1\n")
    options = handler_options({}, environ={}, cores=1)
    assert default_mode(config) == Mode(options.runtime, options.precision)


def test_default_mode_is_read_from_the_model_config(tmp_path):
    config = tmp_path / "model-config.yaml"
    config.write_text("batchSize: 32\nhandler:\n  runtime: onnx\n  precision: int8\n")
    assert default_mode(config) == Mode("onnx", "int8")


def metrics_text(counts, total, model="sentiment"):
    """Prometheus text of the handler's batch histogram: cumulative `counts` per le bucket, and the sum."""
    lines = ["# TYPE sentiment_batch_requests histogram"]
    labels = f'Level="Model",ModelName="{model}",Hostname="h"'
    lines += [f'sentiment_batch_requests_bucket{{{labels},le="{le}"}} {count}' for le, count in counts.items()]
    lines += [
        f"sentiment_batch_requests_count{{{labels}}} {list(counts.values())[-1]}",
        f"sentiment_batch_requests_sum{{{labels}}} {total}",
    ]
    return "\n".join(lines)


BUCKETS = ("1.0", "2.5", "5.0", "7.5", "10.0", "+Inf")


def test_batch_histogram_is_the_handlers_metric_grown_between_two_snapshots():
    before = histogram_snapshot(metrics_text(dict(zip(BUCKETS, (4, 4, 4, 4, 4, 4), strict=True)), 4.0))
    # Since then: 2 batches of 1 request, 1 of 4, 3 of 32 (102 requests in 6 batches).
    after = histogram_snapshot(metrics_text(dict(zip(BUCKETS, (6, 6, 7, 7, 7, 10), strict=True)), 106.0))
    figures = batch_figures(before, after)
    assert figures["histogram"] == {"1": 2, "3-5": 1, ">10": 3}
    assert figures["batches"] == 6
    assert figures["mean_per_batch"] == 17.0


def test_batch_histogram_reads_only_the_sentiment_models_metric():
    text = metrics_text({"1.0": 5, "+Inf": 9}, 40.0) + "\n" + metrics_text({"1.0": 1, "+Inf": 1}, 1.0, model="other")
    assert histogram_snapshot(text) == {"buckets": {"1.0": 5.0, "+Inf": 9.0}, "sum": 40.0, "count": 9.0}


def test_only_2xx_answers_count_as_served_and_every_other_answer_is_an_error():
    summary = {
        "requests": 100,
        "status_2xx": 90,
        "errors_status": 7,  # wrk's own count: statuses >= 400 only
        "errors_timeout": 2,
        "errors_read": 1,
        "errors_connect": 0,
        "errors_write": 0,
    }
    # 10 answers were not 2xx (7 >= 400, 3 redirects or the like), and 3 requests got no answer.
    assert served_and_errors(summary) == (90, 13)


CPU_IDLE_THEN_STOLEN = (
    [100, 0, 50, 800, 10, 0, 5, 35, 0, 0],
    [150, 0, 70, 900, 10, 0, 5, 65, 0, 0],
)


def test_steal_is_the_share_of_cpu_time_the_hypervisor_gave_away_between_two_readings():
    # 200 ticks went by: 50 user, 20 system, 100 idle, 30 stolen.
    assert steal_share(*CPU_IDLE_THEN_STOLEN) == 0.15
    assert busy_share(*CPU_IDLE_THEN_STOLEN) == 0.5


def test_steal_is_unknown_without_readings():
    assert steal_share([], [1, 2, 3]) is None
    assert steal_share([0] * 10, [0] * 10) is None


def test_a_pass_figure_is_the_median_pass_with_the_slowest_and_fastest():
    # 872 sentences in 10 s, 8 s and 40 s (one disturbed pass): the median is the 10 s pass.
    figures = pass_figures([10.0, 8.0, 40.0], 872)
    assert figures == {"passes": 3, "sentences_per_s": 87.2, "range_sentences_per_s": [21.8, 109.0]}


def test_whole_passes_cover_every_sentence_once_in_batches():
    items = list(range(872))
    batches = batches_of(items, 32)
    assert [item for batch in batches for item in batch] == items
    assert [len(batch) for batch in batches] == [32] * 27 + [8]


def load_point(system, concurrency, requests_per_s, p50_ms=100.0, errors=0, valid=True, mode="onnx fp32"):
    return {
        "system": system,
        "mode": mode,
        "concurrency": concurrency,
        "duration_s": 15,
        "valid": valid,
        "invalid_reason": None if valid else "ran 45 s, under 20 x p50 (3.0 s); the cap is 45 s",
        "requests": 1000,
        "errors": errors,
        "requests_per_s": requests_per_s,
        "p50_ms": p50_ms,
        "p95_ms": p50_ms * 1.5,
        "p99_ms": p50_ms * 2,
        "resources": {},
    }


def turns(service, original, mode="onnx fp32"):
    return {
        "service": [load_point("service", 32, rate, mode=mode) for rate in service],
        "original": [load_point("original", 32, rate, mode="torch fp32") for rate in original],
    }


def run_results(service_c64=50.0, c64_valid=True, original_c32=20.0, errors=0):
    return {
        "timestamp": "20261129T150000Z",
        "quick": False,
        "machine": {
            "cpu": "AMD EPYC 7B13",
            "vector_extensions": ["avx", "avx2", "fma"],
            "cores": 2,
            "memory_gb": 23.5,
            "python": "3.11.7",
            "torch": "2.13.0",
            "onnxruntime": "1.32.0",
            "load_avg_at_start": 0.2,
        },
        "rule": PointRule().__dict__,
        "default_mode": "onnx fp32",
        "in_process": {
            "onnx fp32": [
                in_process_point(1, False, 33.0, 30.0),
                in_process_point(32, True, 50.0, 640.0),
            ]
        },
        "passes": 3,
        "points": [
            load_point("service", 1, 28.0, p50_ms=35.0),
            load_point("service", 8, 40.0, errors=errors),
            load_point("service", 32, 44.0),
            load_point("service", 64, service_c64, valid=c64_valid),
            load_point("original", 32, original_c32, mode="torch fp32"),
        ],
        "turns": {
            "onnx fp32": turns([44.0, 40.0, 46.0], [original_c32, original_c32 + 5, original_c32 - 5]),
            "onnx int8": turns([60.0, 58.0, 61.0], [original_c32] * 3, mode="onnx int8"),
        },
        "accuracy": {},
    }


def in_process_point(batch_size, sort_by_length, rate, p50_ms):
    return {
        "batch_size": batch_size,
        "sorted": sort_by_length,
        "sentences": 872,
        "passes": 3,
        "sentences_per_s": rate,
        "range_sentences_per_s": [rate - 1, rate + 1],
        "p50_ms_per_batch": p50_ms,
    }


def test_headline_passes_and_misses_by_how_much():
    figures = headline(run_results(service_c64=46.0))
    assert figures["service_best_vs_ceiling"]["value"] == 0.92  # 46 / 50
    assert figures["service_best_vs_ceiling"]["verdict"] == "pass"
    assert figures["service_best_vs_ceiling"]["margin"] == 0.02  # target 0.9
    assert figures["service_vs_original_c32"]["value"] == 2.2  # medians of the turns: 44 / 20
    assert figures["service_vs_original_c32_int8"]["value"] == 3.0  # 60 / 20
    assert figures["c1_p50_overhead_ms"]["value"] == 5.0  # 35 ms - 30 ms
    assert figures["c1_p50_overhead_ms"]["verdict"] == "pass"
    assert figures["service_c64_vs_c8"]["verdict"] == "pass"


def test_headline_reports_a_miss_with_a_negative_margin():
    figures = headline(run_results(service_c64=30.0, original_c32=30.0, errors=3))
    assert figures["service_c64_vs_c8"]["value"] == 0.75
    assert figures["service_c64_vs_c8"]["verdict"] == "miss"
    assert figures["service_c64_vs_c8"]["margin"] == -0.25
    assert figures["service_vs_original_c32"]["verdict"] == "miss"
    assert figures["errors_total"]["verdict"] == "miss"
    assert figures["errors_total"]["margin"] == -3


def test_the_ceiling_is_the_best_in_process_figure_batch_1_included():
    results = run_results()
    results["in_process"]["onnx fp32"][0]["sentences_per_s"] = 55.0
    assert ceiling(results, "onnx fp32") == 55.0


def test_turns_give_the_median_and_range_of_each_side_and_the_ratio_of_medians():
    figures = turn_figures(turns([44.0, 30.0, 46.0], [20.0, 25.0, 15.0]))
    assert figures["service"]["median"] == 44.0
    assert figures["service"]["range"] == [30.0, 46.0]
    assert figures["original"]["median"] == 20.0
    assert figures["ratio"] == 2.2


def test_a_turn_ratio_with_an_invalid_turn_is_invalid():
    results = run_results()
    results["turns"]["onnx int8"]["original"][1]["valid"] = False
    assert headline(results)["service_vs_original_c32_int8"]["verdict"] == "INVALID"


def test_errors_in_the_turns_count_too():
    results = run_results()
    results["turns"]["onnx fp32"]["service"][2]["errors"] = 4
    assert headline(results)["errors_total"]["value"] == 4


def test_a_headline_built_on_an_invalid_point_is_invalid_not_a_number():
    figures = headline(run_results(c64_valid=False))
    assert figures["service_c64_vs_c8"]["verdict"] == "INVALID"
    assert figures["service_c64_vs_c8"]["value"] is None
    assert "concurrency 64" in figures["service_c64_vs_c8"]["reason"]
    assert figures["service_best_vs_ceiling"]["verdict"] == "INVALID"


def test_the_tables_show_invalid_points_as_invalid(tmp_path):
    results = run_results(service_c64=987.6, c64_valid=False)
    results["headline"] = headline(results)
    write_markdown(results, tmp_path / "latest.md")
    text = (tmp_path / "latest.md").read_text()
    assert "| service | onnx fp32 | 64 | INVALID |" in text
    assert "987.6" not in text
    assert "AMD EPYC 7B13 (avx, avx2, fma)" in text


def test_tuning_varies_one_setting_at_a_time_from_the_current_one():
    current = Batching(workers=1, threads=2, batch_size=32, max_batch_delay_ms=2)
    assert one_at_a_time(current, cores=2) == [
        current,
        Batching(2, 1, 32, 2),
        Batching(1, 2, 16, 2),
        Batching(1, 2, 32, 10),
    ]


def test_layouts_are_workers_by_threads():
    assert parse_layout("2x1") == (2, 1)
    with pytest.raises(ValueError, match="workers x threads"):
        parse_layout("2")


def test_a_tuned_archive_carries_its_batching_settings_and_is_no_longer_the_plain_build(tmp_path):
    import json
    import zipfile

    from bench.serving import with_model_config

    mar = tmp_path / "sentiment.mar"
    with zipfile.ZipFile(mar, "w") as archive:
        archive.writestr("model-config.yaml", "minWorkers: 1\nbatchSize: 32\nhandler:\n  precision: fp32\n")
        archive.writestr("build-info.json", json.dumps({"fingerprint": "abc"}))
        archive.writestr("model.safetensors", b"weights")
    with_model_config(mar, Batching(2, 1, 16, 10).model_config())
    with zipfile.ZipFile(mar) as archive:
        config = yaml.safe_load(archive.read("model-config.yaml"))
        fingerprint = json.loads(archive.read("build-info.json"))["fingerprint"]
        weights = archive.read("model.safetensors")
    assert config == {
        "minWorkers": 2,
        "batchSize": 16,
        "handler": {"precision": "fp32", "threads": 1},
        "maxWorkers": 2,
        "maxBatchDelay": 10,
    }
    assert fingerprint != "abc"
    assert weights == b"weights"


def test_goodput_counts_the_texts_of_2xx_answers_finished_within_the_flood():
    # (started, status, seconds): 200 in time, 503 in time, 200 finishing after the flood, no answer.
    answers = [(0.0, 200, 1.0), (1.0, 503, 0.1), (9.5, 200, 1.0), (2.0, 0, 60.0)]
    assert texts_served(answers, texts_per_request=16, until=10.0) == 16


def test_abuse_prints_goodput_memory_per_component_and_heavy_statuses(capsys):
    figures = {
        "heavy_texts": 4,
        "max_request_tokens": 2048,
        "largest_request_idle_s": 1.0,
        "light_request_idle_s": 0.02,
        "light_requests": 40,
        "light_statuses": {"200": 40},
        "light_p50_s": 0.5,
        "light_p99_s": 1.5,
        "light_p99_bound_s": 3.08,
        "light_max_s": 1.6,
        "heavy_requests": 9,
        "heavy_statuses": {"200": 3, "503": 6},
        "heavy_p99_s": 2.0,
        "heavy_max_s": 2.0,
        "goodput_texts_per_s": 2.6,
        "components": {"nginx": {"peak_rss_mb": 9.5, "cpu_cores": 0.01}},
        "idle_after_s": 1.2,
    }
    abuse_report(figures)
    out = capsys.readouterr().out
    assert "heavy clients: 9 requests {'200': 3, '503': 6}" in out
    assert "goodput: 2.60 texts/s" in out
    assert "nginx:       peak RSS 9.5 MB, 0.01 cores" in out
    assert failures(figures) == []
    assert failures({**figures, "light_p99_s": 3.5}) == ["light p99 3.5 s is over the bound 3.08 s"]
