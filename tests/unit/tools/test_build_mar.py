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
    # PRECISION=auto (the default) packs fp32: the tiny model gives every text one label.
    assert (info["runtime"], info["precision"]) == ("onnx", "fp32")
    assert info["precision_choice"]["precision"] == "fp32"
    assert info["precision_choice"]["reason"].startswith("fp32: the model gives NEGATIVE to 100 % of the 1200 texts")
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


def graph_ops(archive):
    """Return the operator types of the archive's model.onnx."""
    import onnx

    with zipfile.ZipFile(archive) as mar:
        return {node.op_type for node in onnx.load_from_string(mar.read("model.onnx")).graph.node}


@pytest.fixture(scope="module")
def boundary_model_dir(tmp_path_factory):
    """The tiny model with its answers spread around the decision boundary: half the sample positive,
    many texts within a small margin, so int8's rounding flips some of them (as for any model whose
    scores sit near 0.5)."""
    import torch
    from transformers import AutoTokenizer, DistilBertForSequenceClassification

    from stack.tiny_model import build_tiny_model
    from tools.precision_gate import SAMPLE, sample_sentences

    source = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    model = DistilBertForSequenceClassification.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and "embeddings" not in name:
                weight.mul_(8)
        encoded = tokenizer(sample_sentences(SAMPLE), padding=True, truncation=True, return_tensors="pt")
        logits = model(**encoded).logits
        model.classifier.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    target = tmp_path_factory.mktemp("boundary")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def test_auto_refuses_int8_that_flips_labels_and_packs_fp32_saying_why(boundary_model_dir, tmp_path, capsys):
    archive = build(settings_for(boundary_model_dir, tmp_path, PRECISION="auto"))
    _, config, info = archive_contents(archive)
    choice = info["precision_choice"]
    assert config["handler"]["precision"] == info["precision"] == choice["precision"] == "fp32"
    assert choice["flip_rate"] > choice["max_flip_rate"] == 0.01
    assert choice["sentences"] == 1200 and choice["sample"] == "tools/agreement/sentences.txt"
    # The two most sensitive layers were kept in fp32 before int8 was given up.
    assert len(choice["fp32_layers"]) == 2
    assert "MatMulInteger" not in graph_ops(archive)
    log = capsys.readouterr().out
    assert "int8 sensitivity per layer" in log
    assert f"PRECISION=auto packs {choice['reason']}" in log and "over the 1 % allowed" in log


def test_auto_packs_int8_when_its_flips_are_within_max_flip_rate(boundary_model_dir, tmp_path):
    archive = build(settings_for(boundary_model_dir, tmp_path, PRECISION="auto", MAX_FLIP_RATE="0.2"))
    _, config, info = archive_contents(archive)
    choice = info["precision_choice"]
    assert config["handler"]["precision"] == info["precision"] == "int8"
    assert 0.01 < choice["flip_rate"] <= 0.2
    assert choice["fp32_layers"] == []
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= graph_ops(archive)


def test_auto_checks_a_sample_the_user_gives(boundary_model_dir, tmp_path):
    sample = tmp_path / "reviews.txt"
    sample.write_text("".join(f"review {number}: it was {word}\n" for number in range(150) for word in ("good", "bad")))
    settings = settings_for(boundary_model_dir, tmp_path / "store", AGREEMENT_SAMPLE=str(sample))
    info = archive_contents(build(settings))[2]
    assert (info["precision_choice"]["sample"], info["precision_choice"]["sentences"]) == ("reviews.txt", 300)


def test_a_missing_sample_is_refused_naming_the_variable(tiny_model_dir, tmp_path):
    with pytest.raises(BuildError, match=r"AGREEMENT_SAMPLE=.*missing\.txt is not a file"):
        build(settings_for(tiny_model_dir, tmp_path / "store", AGREEMENT_SAMPLE=str(tmp_path / "missing.txt")))
    assert not (tmp_path / "store").exists()


def test_a_changed_max_flip_rate_rebuilds(tiny_model_dir, tmp_path, capsys):
    build(settings_for(tiny_model_dir, tmp_path))
    capsys.readouterr()
    build(settings_for(tiny_model_dir, tmp_path, MAX_FLIP_RATE="0.02"))
    assert "up to date" not in capsys.readouterr().out


def test_auto_with_the_torch_runtime_packs_fp32(tiny_model_dir, tmp_path):
    _, config, info = archive_contents(build(settings_for(tiny_model_dir, tmp_path, RUNTIME="torch", PRECISION="auto")))
    assert config["handler"]["precision"] == info["precision"] == "fp32"
    assert "torch runtime" in info["precision_choice"]["reason"]


@pytest.mark.parametrize("value", ["2", "five"])
def test_a_max_flip_rate_outside_0_to_1_is_refused(tiny_model_dir, tmp_path, value):
    with pytest.raises(BuildError, match="MAX_FLIP_RATE must be a share between 0 and 1"):
        build(settings_for(tiny_model_dir, tmp_path, MAX_FLIP_RATE=value))


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
