"""The archive builder on the tiny model (torch-model-archiver runs for real)."""

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
import yaml
from build_mar import BuildError, BuildSettings, build, model_files

from tests.conftest import PROJECT_DIR


def settings_for(model_dir, store):
    return BuildSettings.from_env({"MODEL_DIR": str(model_dir), "MODEL_STORE": str(store)})


def test_archive_holds_handler_config_and_model_under_the_name_sentiment(tiny_model_dir, tmp_path):
    archive = build(settings_for(tiny_model_dir, tmp_path / "model-store"))
    assert archive == tmp_path / "model-store" / "sentiment.mar"
    with zipfile.ZipFile(archive) as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    assert {
        "sentiment_handler.py",
        "sentiment_requests.py",
        "sentiment_config.py",
        "model-config.yaml",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    } <= names
    assert manifest["model"]["modelName"] == "sentiment"
    assert manifest["model"]["handler"] == "sentiment_handler.py"
    assert manifest["model"]["configFile"] == "model-config.yaml"
    assert list((tmp_path / "model-store").iterdir()) == [archive]


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
        [sys.executable, str(PROJECT_DIR / "handler" / "build_mar.py")],
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


def test_precision_is_written_into_the_archived_model_config(tiny_model_dir, tmp_path):
    settings = BuildSettings.from_env(
        {"MODEL_DIR": str(tiny_model_dir), "MODEL_STORE": str(tmp_path), "PRECISION": "int8"}
    )
    with zipfile.ZipFile(build(settings)) as mar:
        config = yaml.safe_load(mar.read("model-config.yaml"))
        info = json.loads(mar.read("build-info.json"))
    assert config["handler"]["precision"] == "int8"
    assert info["precision"] == "int8"
    assert config["batchSize"] > 1


def test_an_unknown_precision_is_refused(tiny_model_dir, tmp_path):
    settings = BuildSettings.from_env(
        {"MODEL_DIR": str(tiny_model_dir), "MODEL_STORE": str(tmp_path), "PRECISION": "fp8"}
    )
    with pytest.raises(BuildError, match="PRECISION"):
        build(settings)
