"""The archive builder on the tiny model (torch-model-archiver runs for real)."""

import json
import os
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import yaml

from tests.conftest import PROJECT_DIR
from tools.build_mar import BuildError, BuildSettings, build, model_files


def settings_for(model_dir, store, **environ):
    return BuildSettings.from_env({"MODEL_DIR": str(model_dir), "MODEL_STORE": str(store), **environ})


def archive_contents(archive):
    """Return (file names, model-config.yaml, build-info.json) of a built archive."""
    with zipfile.ZipFile(archive) as mar:
        return (
            set(mar.namelist()),
            yaml.safe_load(mar.read("model-config.yaml")),
            json.loads(mar.read("build-info.json")),
        )


def test_archive_holds_handler_config_and_onnx_model_under_the_name_sentiment(tiny_model_dir, tmp_path):
    archive = build(settings_for(tiny_model_dir, tmp_path / "model-store"))
    assert archive == tmp_path / "model-store" / "sentiment.mar"
    with zipfile.ZipFile(archive) as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        info = json.loads(mar.read("build-info.json"))
    assert {
        "sentiment_handler.py",
        "sentiment_requests.py",
        "sentiment_config.py",
        "sentiment_runtime.py",
        "model-config.yaml",
        "config.json",
        "model.onnx",
        "tokenizer.json",
    } <= names
    # The onnx runtime needs no weights beside model.onnx: the archive stays half the size.
    assert "model.safetensors" not in names
    assert (info["runtime"], info["precision"]) == ("onnx", "fp32")
    assert manifest["model"]["modelName"] == "sentiment"
    assert manifest["model"]["handler"] == "sentiment_handler.py"
    assert manifest["model"]["configFile"] == "model-config.yaml"
    assert list((tmp_path / "model-store").iterdir()) == [archive]


def test_every_file_of_the_handler_folder_is_packed_and_nothing_else_of_the_project(tiny_model_dir, tmp_path):
    archive = build(settings_for(tiny_model_dir, tmp_path / "model-store"))
    with zipfile.ZipFile(archive) as mar:
        names = set(mar.namelist())
    handler_files = {path.name for path in (PROJECT_DIR / "handler").iterdir() if path.is_file()}
    assert handler_files <= names
    project_python = {path.name for path in PROJECT_DIR.glob("*/*.py")}
    assert {name for name in names if name.endswith(".py")} == handler_files & project_python


def test_unchanged_inputs_do_not_rebuild(tiny_model_dir, tmp_path, capsys):
    settings = settings_for(tiny_model_dir, tmp_path)
    first = build(settings).stat().st_mtime_ns
    capsys.readouterr()
    second = build(settings).stat().st_mtime_ns
    assert second == first
    assert "up to date" in capsys.readouterr().out


def test_a_changed_model_file_rebuilds(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for path in model_files(tiny_model_dir):
        (model_dir / path.name).write_bytes(path.read_bytes())
    settings = settings_for(model_dir, tmp_path / "store")
    first = build(settings).stat().st_mtime_ns
    config = json.loads((model_dir / "config.json").read_text())
    config["id2label"] = {"0": "NEG", "1": "POS"}
    (model_dir / "config.json").write_text(json.dumps(config))
    time.sleep(0.01)
    assert build(settings).stat().st_mtime_ns != first


def test_a_dir_that_is_not_a_model_is_rejected_with_the_reason(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(BuildError, match=r"no config\.json"):
        build(settings_for(tmp_path, tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_unreachable_hub_fails_within_seconds_naming_model_dir_and_leaves_nothing(tmp_path):
    store = tmp_path / "model-store"
    env = {
        **os.environ,
        "MODEL_DIR": "",
        "MODEL_STORE": str(store),
        "HF_HOME": str(tmp_path / "hf"),
        # A closed loopback port: unreachable everywhere, online or not.
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tools.build_mar"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "MODEL_DIR" in result.stderr
    assert time.monotonic() - started < 20
    assert not store.exists() or list(store.iterdir()) == []


def test_runtime_torch_packs_the_weights_and_no_onnx_model(tiny_model_dir, tmp_path):
    names, config, info = archive_contents(build(settings_for(tiny_model_dir, tmp_path, RUNTIME="torch")))
    assert {"model.safetensors", "config.json", "sentiment_runtime.py"} <= names
    assert "model.onnx" not in names
    assert config["handler"]["runtime"] == info["runtime"] == "torch"


def test_a_changed_runtime_rebuilds_the_archive(tiny_model_dir, tmp_path, capsys):
    build(settings_for(tiny_model_dir, tmp_path, RUNTIME="torch"))
    capsys.readouterr()
    names, _, info = archive_contents(build(settings_for(tiny_model_dir, tmp_path, RUNTIME="onnx")))
    assert "up to date" not in capsys.readouterr().out
    assert "model.onnx" in names
    assert info["runtime"] == "onnx"


def test_onnx_int8_packs_a_quantized_model(tiny_model_dir, tmp_path):
    import onnx

    archive = build(settings_for(tiny_model_dir, tmp_path, PRECISION="int8"))
    _, config, info = archive_contents(archive)
    assert config["handler"]["precision"] == info["precision"] == "int8"
    assert config["batchSize"] > 1
    with zipfile.ZipFile(archive) as mar:
        graph = onnx.load_from_string(mar.read("model.onnx")).graph
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {node.op_type for node in graph.node}


def test_onnx_with_bf16_is_refused_naming_what_to_set(tiny_model_dir, tmp_path):
    with pytest.raises(BuildError, match=r"RUNTIME=onnx with PRECISION=bf16: bf16 runs on the torch runtime only"):
        build(settings_for(tiny_model_dir, tmp_path, PRECISION="bf16"))
    assert list(tmp_path.iterdir()) == []


def test_torch_with_bf16_builds(tiny_model_dir, tmp_path):
    _, config, _ = archive_contents(build(settings_for(tiny_model_dir, tmp_path, RUNTIME="torch", PRECISION="bf16")))
    assert (config["handler"]["runtime"], config["handler"]["precision"]) == ("torch", "bf16")


def test_the_archive_builds_from_model_dir_with_the_network_off(tiny_model_dir, tmp_path, monkeypatch):
    def refuse(sock, address):
        raise OSError(f"network is off in this test (connect to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    names, _, _ = archive_contents(build(settings_for(tiny_model_dir, tmp_path)))
    assert "model.onnx" in names


@pytest.mark.parametrize(("variable", "value"), [("PRECISION", "fp8"), ("RUNTIME", "tensorrt")])
def test_an_unknown_precision_or_runtime_is_refused(tiny_model_dir, tmp_path, variable, value):
    with pytest.raises(BuildError, match=f"{variable} must be one of"):
        build(settings_for(tiny_model_dir, tmp_path, **{variable: value}))
