"""The benchmark's rules: point validity, CPU flags, batch histograms, targets judged."""

from pathlib import Path

import pytest
import yaml

from bench.abuse import failures, texts_served
from bench.abuse import report as abuse_report
from bench.load import BATCH_FIELD, WRK_TIMEOUT_S, PointRule, batch_figures, batch_histogram
from bench.machine import VECTOR_FLAGS, has_fast_bf16, vector_extensions
from bench.modes import Mode, default_mode, offered_modes
from bench.report import headline, write_markdown
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


def log_line(request_id, batch):
    return (
        "2026-11-29T15:01:02,345 [INFO ] W-9000-sentiment_1.0-stdout MODEL_LOG - "
        f"request_id={request_id} texts=1 status=200 batch={batch}"
    )


def test_histogram_counts_batches_not_requests():
    lines = [log_line("a", 1), *(log_line(f"b{i}", 3) for i in range(3)), *(log_line(f"c{i}", 3) for i in range(3))]
    assert batch_histogram(lines) == {1: 1, 3: 2}


def test_histogram_leaves_out_the_drain_probe_and_other_lines():
    lines = [
        "2026-11-29T15:01:02,345 [INFO ] W-9000 MODEL_LOG - Loaded DistilBertForSequenceClassification",
        log_line("bench-drain", 1),
        log_line("x", 2),
        log_line("y", 2),
    ]
    assert batch_histogram(lines) == {2: 1}


def test_batch_figures_give_means_per_batch_and_per_request():
    figures = batch_figures({1: 2, 4: 2})
    assert figures["batches"] == 4
    assert figures["mean_per_batch"] == 2.5  # 10 requests in 4 batches
    assert figures["mean_per_request"] == 3.4  # 2 requests saw 1, 8 saw 4
    assert figures["histogram"] == {"1": 2, "4": 2}


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
                {"batch_size": 1, "sorted": False, "sentences_per_s": 33.0, "p50_ms_per_batch": 30.0},
                {"batch_size": 32, "sorted": True, "sentences_per_s": 50.0, "p50_ms_per_batch": 640.0},
            ]
        },
        "points": [
            load_point("service", 1, 28.0, p50_ms=35.0),
            load_point("service", 8, 40.0, errors=errors),
            load_point("service", 32, 44.0),
            load_point("service", 64, service_c64, valid=c64_valid),
            load_point("original", 32, original_c32, mode="torch fp32"),
        ],
        "accuracy": {},
    }


def test_headline_passes_and_misses_by_how_much():
    figures = headline(run_results(service_c64=46.0))
    assert figures["service_best_vs_ceiling"]["value"] == 0.92  # 46 / 50
    assert figures["service_best_vs_ceiling"]["verdict"] == "pass"
    assert figures["service_best_vs_ceiling"]["margin"] == 0.07
    assert figures["service_vs_original_c32"]["value"] == 2.2  # 44 / 20
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


def test_batch_sizes_are_read_from_the_handlers_current_log_line_too():
    line = "MODEL_LOG - request_id=abc texts=1 tokens=24 status=200 code=- batch=7"
    assert BATCH_FIELD.search(line).groups() == ("abc", "7")


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
