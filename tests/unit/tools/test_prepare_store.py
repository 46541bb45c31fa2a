"""The Docker `model` service's store preparation: local model dir, prebuilt archive, hub default."""

import json
import zipfile

from tools import build_mar
from tools.build_mar import BuildError
from tools.prepare_store import main, prepare


def env_for(store, source, **extra):
    return {"MODEL_STORE": str(store), "MODEL_SOURCE": str(source), **extra}


def settings_for(store):
    return build_mar.BuildSettings.from_env({"MODEL_STORE": str(store)})


def test_a_model_dir_at_the_source_is_built_into_the_store(tiny_model_dir, tmp_path):
    archive = prepare(tiny_model_dir, settings_for(tmp_path / "store"))
    assert archive == tmp_path / "store" / "sentiment.mar"
    with zipfile.ZipFile(archive) as mar:
        assert {"sentiment_handler.py", "config.json", "model.onnx"} <= set(mar.namelist())
        assert json.loads(mar.read("build-info.json"))["model_dir"] == tiny_model_dir.name


def test_a_model_dir_wins_over_a_stale_mar_next_to_it_and_over_model_dir_in_the_environment(tiny_model_dir, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for path in tiny_model_dir.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    (source / "sentiment.mar").write_bytes(b"stale")
    store = tmp_path / "store"
    assert main(env_for(store, source, MODEL_DIR=str(tmp_path / "elsewhere"))) == 0
    assert zipfile.is_zipfile(store / "sentiment.mar")


def test_a_prebuilt_mar_is_copied_once_and_replaced_when_it_changes(tmp_path, capsys):
    source, store = tmp_path / "source", tmp_path / "store"
    source.mkdir()
    (source / "sentiment.mar").write_bytes(b"archive v1")
    assert main(env_for(store, source)) == 0
    target = store / "sentiment.mar"
    assert target.read_bytes() == b"archive v1"
    first = target.stat().st_mtime_ns

    assert main(env_for(store, source)) == 0
    assert target.stat().st_mtime_ns == first
    assert "up to date" in capsys.readouterr().out

    (source / "sentiment.mar").write_bytes(b"archive v2")
    assert main(env_for(store, source)) == 0
    assert target.read_bytes() == b"archive v2"
    assert sorted(path.name for path in store.iterdir()) == ["sentiment.mar"]  # no temp file left


def test_without_a_model_dir_or_mar_the_pinned_hub_model_is_built(tiny_model_dir, tmp_path, monkeypatch):
    asked = []

    def fake_download(model_id, revision):
        asked.append((model_id, revision))
        return tiny_model_dir

    monkeypatch.setattr(build_mar, "downloaded_model_dir", fake_download)
    source = tmp_path / "empty-source"
    source.mkdir()
    assert main(env_for(tmp_path / "store", source, MODEL_ID="org/model", MODEL_REVISION="abc1234")) == 0
    assert asked == [("org/model", "abc1234")]
    with zipfile.ZipFile(tmp_path / "store" / "sentiment.mar") as mar:
        info = json.loads(mar.read("build-info.json"))
    assert (info["model_id"], info["revision"]) == ("org/model", "abc1234")


def test_an_unreachable_hub_without_an_archive_exits_1_naming_model_dir(tmp_path, monkeypatch, capsys):
    def offline(model_id, revision):
        raise BuildError("Could not download; point MODEL_DIR at a local Hugging Face model dir")

    monkeypatch.setattr(build_mar, "downloaded_model_dir", offline)
    source = tmp_path / "empty-source"
    source.mkdir()
    assert main(env_for(tmp_path / "store", source)) == 1
    assert "MODEL_DIR" in capsys.readouterr().err
    assert not (tmp_path / "store" / "sentiment.mar").exists()


def test_a_source_mount_that_does_not_exist_falls_back_to_the_hub(tiny_model_dir, tmp_path, monkeypatch):
    asked = []

    def fake_download(model_id, revision):
        asked.append(model_id)
        return tiny_model_dir

    monkeypatch.setattr(build_mar, "downloaded_model_dir", fake_download)
    archive = prepare(tmp_path / "no-such-dir", settings_for(tmp_path / "store"))
    assert asked == ["distilbert/distilbert-base-uncased-finetuned-sst-2-english"]
    assert zipfile.is_zipfile(archive)
