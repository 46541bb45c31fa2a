"""Handler options from model-config.yaml and the environment."""

import os

import pytest

from sentiment_config import HandlerConfigError, available_cores, cgroup_cpu_limit, handler_options


def test_threads_default_to_cores_divided_by_workers():
    assert handler_options({"minWorkers": 2}, environ={}, cores=8).threads == 4


def test_threads_never_drop_below_one():
    assert handler_options({"minWorkers": 4}, environ={}, cores=2).threads == 1


def test_threads_from_the_yaml_win_over_the_default():
    options = handler_options({"minWorkers": 1, "handler": {"threads": 3}}, environ={}, cores=8)
    assert options.threads == 3


def test_threads_from_the_environment_win_over_the_yaml():
    environ = {"SENTIMENT_TORCH_THREADS": "2"}
    assert handler_options({"handler": {"threads": 3}}, environ=environ, cores=8).threads == 2


def test_max_length_zero_means_the_models_own_limit():
    assert handler_options({"handler": {"max_length": 0}}, environ={}, cores=1).max_length is None
    assert handler_options({"handler": {"max_length": 128}}, environ={}, cores=1).max_length == 128


@pytest.mark.parametrize(
    ("yaml_config", "environ", "message"),
    [
        ({"handler": {"threads": -1}}, {}, "handler.threads"),
        ({"handler": {"threads": "many"}}, {}, "handler.threads"),
        ({"handler": {"max_length": 1.5}}, {}, "handler.max_length"),
        ({"handler": {"thread": 2}}, {}, "unknown handler option"),
        ({}, {"SENTIMENT_TORCH_THREADS": "-2"}, "SENTIMENT_TORCH_THREADS"),
        ({"handler": ["threads"]}, {}, "must be a mapping"),
    ],
)
def test_bad_options_are_refused_naming_the_setting(yaml_config, environ, message):
    with pytest.raises(HandlerConfigError, match=message):
        handler_options(yaml_config, environ=environ, cores=2)


def test_precision_and_pass_budget_come_from_the_yaml():
    options = handler_options({"handler": {"precision": "int8", "max_batch_tokens": 512}}, environ={}, cores=1)
    assert (options.precision, options.max_batch_tokens) == ("int8", 512)
    assert handler_options({}, environ={}, cores=1).precision == "fp32"


@pytest.mark.parametrize(
    ("section", "message"),
    [({"precision": "fp16"}, "handler.precision"), ({"max_batch_tokens": 0}, "max_batch_tokens")],
)
def test_unknown_precision_or_empty_pass_budget_is_refused(section, message):
    with pytest.raises(HandlerConfigError, match=message):
        handler_options({"handler": section}, environ={}, cores=1)


def test_the_token_limit_per_request_comes_from_the_yaml_and_0_turns_it_off():
    assert handler_options({}, environ={}, cores=1).max_request_tokens == 2048
    assert handler_options({"handler": {"max_request_tokens": 0}}, environ={}, cores=1).max_request_tokens == 0
    with pytest.raises(HandlerConfigError, match=r"handler\.max_request_tokens"):
        handler_options({"handler": {"max_request_tokens": -5}}, environ={}, cores=1)


def test_runtime_defaults_to_onnx_and_torch_can_be_chosen():
    assert handler_options({}, environ={}, cores=1).runtime == "onnx"
    assert handler_options({"handler": {"runtime": "torch"}}, environ={}, cores=1).runtime == "torch"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"runtime": "tensorrt"}, "handler.runtime must be one of onnx, torch"),
        ({"runtime": "onnx", "precision": "bf16"}, "bf16 runs on the torch runtime only"),
        ({"precision": "bf16"}, "bf16 runs on the torch runtime only"),
        ({"warmup_seconds": -1}, "handler.warmup_seconds"),
    ],
)
def test_an_unknown_runtime_onnx_with_bf16_or_a_negative_warm_up_is_refused(section, message):
    with pytest.raises(HandlerConfigError, match=message):
        handler_options({"handler": section}, environ={}, cores=1)


def test_torch_runs_every_precision_and_onnx_runs_fp32_and_int8():
    for runtime, precision in [("torch", "bf16"), ("torch", "int8"), ("onnx", "int8"), ("onnx", "fp32")]:
        options = handler_options({"handler": {"runtime": runtime, "precision": precision}}, environ={}, cores=1)
        assert (options.runtime, options.precision) == (runtime, precision)


def test_warm_up_budget_comes_from_the_yaml_with_a_default():
    assert handler_options({}, environ={}, cores=1).warmup_seconds == 3
    assert handler_options({"handler": {"warmup_seconds": 0}}, environ={}, cores=1).warmup_seconds == 0


def cgroup(tmp_path, files):
    """Write cgroup files as the kernel shows them under a container's /sys/fs/cgroup; return the root."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 1),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_the_cpu_limit_is_the_cgroup_quota_in_whole_cpus(tmp_path, files, cpus):
    assert cgroup_cpu_limit(cgroup(tmp_path, files)) == cpus


def test_the_cores_used_are_capped_by_the_containers_cpu_limit(tmp_path):
    one_cpu = cgroup(tmp_path / "one", {"cpu.max": "100000 100000\n"})
    many_cpus = cgroup(tmp_path / "many", {"cpu.max": "6400000 100000\n"})

    assert available_cores(one_cpu) == 1
    assert available_cores(many_cpus) == len(os.sched_getaffinity(0))


def test_precision_auto_in_an_archive_says_make_mar_chooses_it():
    with pytest.raises(HandlerConfigError, match=r"handler.precision auto is chosen by `make mar`"):
        handler_options({"handler": {"precision": "auto"}}, environ={}, cores=2)
