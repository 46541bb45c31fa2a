"""Settings: defaults, FACADE_* parsing, start-up validation and the container ID default."""

import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from facade.settings import Settings, SettingsError, default_container_id

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_match_the_documented_table():
    settings = Settings.from_env({"FACADE_CONTAINER_ID": "box"})

    assert settings == Settings(container_id="box")
    assert settings.torchserve_url == "http://127.0.0.1:8090"
    assert (settings.model_name, settings.host, settings.port) == ("sentiment", "127.0.0.1", 5001)
    assert (settings.connect_timeout_s, settings.read_timeout_s, settings.ready_timeout_s) == (1.0, 15.0, 2.0)
    assert (settings.max_texts, settings.max_text_chars, settings.max_body_bytes) == (64, 10000, 1048576)
    assert (settings.workers, settings.threads, settings.graceful_timeout_s) == (2, 16, 20)
    assert (settings.retry_after_s, settings.log_level) == (1, "info")
    assert settings.metrics_dir == ""


def test_a_management_url_left_from_an_older_setup_stops_the_start_and_says_to_remove_it():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"FACADE_TORCHSERVE_MANAGEMENT_URL": "http://torchserve:8091"})
    assert "FACADE_TORCHSERVE_MANAGEMENT_URL is set" in str(raised.value)
    assert "remove the variable" in str(raised.value)
    assert Settings.from_env({"FACADE_TORCHSERVE_MANAGEMENT_URL": " ", "FACADE_CONTAINER_ID": "box"}).port == 5001


def test_every_variable_is_read_from_the_environment(tmp_path):
    environ = {
        "FACADE_TORCHSERVE_URL": "http://torchserve:8080",
        "FACADE_MODEL_NAME": "sst2.v1",
        "FACADE_CONNECT_TIMEOUT_S": "0.5",
        "FACADE_READ_TIMEOUT_S": "30",
        "FACADE_READY_TIMEOUT_S": "1.5",
        "FACADE_MAX_TEXTS": "8",
        "FACADE_MAX_TEXT_CHARS": "500",
        "FACADE_MAX_BODY_BYTES": "65536",
        "FACADE_RETRY_AFTER_S": "0",
        "FACADE_CONTAINER_ID": "abc123def456",
        "FACADE_HOST": "0.0.0.0",
        "FACADE_PORT": " 8000 ",
        "FACADE_WORKERS": "4",
        "FACADE_THREADS": "32",
        "FACADE_GRACEFUL_TIMEOUT_S": "5",
        "FACADE_LOG_LEVEL": "DEBUG",
        "FACADE_METRICS_DIR": str(tmp_path),
    }

    assert Settings.from_env(environ) == Settings(
        torchserve_url="http://torchserve:8080",
        model_name="sst2.v1",
        connect_timeout_s=0.5,
        read_timeout_s=30.0,
        ready_timeout_s=1.5,
        max_texts=8,
        max_text_chars=500,
        max_body_bytes=65536,
        retry_after_s=0,
        container_id="abc123def456",
        host="0.0.0.0",
        port=8000,
        workers=4,
        threads=32,
        graceful_timeout_s=5,
        log_level="DEBUG",
        metrics_dir=str(tmp_path),
    )


def test_empty_variable_keeps_the_default():
    assert Settings.from_env({"FACADE_PORT": "", "FACADE_CONTAINER_ID": "box"}).port == 5001


def test_settings_are_read_from_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("FACADE_MAX_TEXTS", "5")

    assert Settings.from_env().max_texts == 5


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("FACADE_READ_TIMEOUT_S", "-1", "above 0"),
        ("FACADE_CONNECT_TIMEOUT_S", "0", "above 0"),
        ("FACADE_READY_TIMEOUT_S", "nan", "above 0"),
        ("FACADE_READ_TIMEOUT_S", "soon", "a number"),
        ("FACADE_PORT", "70000", "1 to 65535"),
        ("FACADE_PORT", "80.5", "a whole number"),
        ("FACADE_WORKERS", "0", "at least 1"),
        ("FACADE_THREADS", "-4", "at least 1"),
        ("FACADE_MAX_TEXTS", "0", "at least 1"),
        ("FACADE_MAX_TEXT_CHARS", "0", "at least 1"),
        ("FACADE_MAX_BODY_BYTES", "1MB", "a whole number"),
        ("FACADE_RETRY_AFTER_S", "-1", "0 or more"),
        ("FACADE_GRACEFUL_TIMEOUT_S", "-5", "0 or more"),
        ("FACADE_TORCHSERVE_URL", "torchserve:8080", "http://"),
        ("FACADE_TORCHSERVE_URL", "http://host:port", "http://"),
        ("FACADE_TORCHSERVE_URL", "http://host/?q=1", "http://"),
        ("FACADE_TORCHSERVE_URL", "http://a:8090,torchserve:8090", "comma-separated"),
        ("FACADE_TORCHSERVE_URL", " , ", "http://"),
        ("FACADE_RESOLVE_INTERVAL_S", "0", "above 0"),
        ("FACADE_MODEL_NAME", "sentiment/../x", "letters, digits"),
        ("FACADE_CONTAINER_ID", "has space", "A-Z a-z 0-9"),
        ("FACADE_LOG_LEVEL", "verbose", "one of debug, info"),
        ("FACADE_METRICS_DIR", "relative/dir", "absolute path of an existing writable folder"),
        ("FACADE_METRICS_DIR", "/no/such/folder", "absolute path of an existing writable folder"),
    ],
)
def test_invalid_value_fails_start_up_naming_the_variable_and_what_is_allowed(variable, value, allowed):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FACADE_CONTAINER_ID": "box", variable: value})

    assert str(caught.value).startswith(f"{variable}=")
    assert allowed in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_container_id_defaults_to_the_hostname_inside_docker():
    assert default_container_id(5001, in_docker=True, hostname="3f2a1b9c8d7e") == "3f2a1b9c8d7e"


def test_container_id_defaults_to_hostname_and_port_outside_docker():
    assert default_container_id(5002, in_docker=False, hostname="laptop") == "laptop-5002"


def test_container_id_default_follows_this_machine_and_facade_port():
    expected = default_container_id(6123, os.path.exists("/.dockerenv"), socket.gethostname())

    assert Settings.from_env({"FACADE_PORT": "6123"}).container_id == expected


def test_explicit_container_id_wins():
    assert Settings.from_env({"FACADE_CONTAINER_ID": "web-1"}).container_id == "web-1"


def test_gunicorn_config_takes_every_value_from_the_settings(monkeypatch):
    monkeypatch.setenv("FACADE_HOST", "127.0.0.2")
    monkeypatch.setenv("FACADE_PORT", "6001")
    monkeypatch.setenv("FACADE_WORKERS", "3")
    monkeypatch.setenv("FACADE_THREADS", "8")
    monkeypatch.setenv("FACADE_READ_TIMEOUT_S", "40")
    monkeypatch.setenv("FACADE_GRACEFUL_TIMEOUT_S", "9")
    monkeypatch.setenv("FACADE_LOG_LEVEL", "WARNING")

    config = run_gunicorn_config()

    assert config["bind"] == "127.0.0.2:6001"
    assert (config["workers"], config["threads"], config["worker_class"]) == (
        3,
        4 * 8 + 2,
        "gthread",
    )  # classify, wait, probes
    assert config["timeout"] > 40
    assert (config["graceful_timeout"], config["loglevel"]) == (9, "warning")
    assert config["wsgi_app"] == "facade:create_app()"
    assert config["max_requests"] == 0  # a recycled worker would leave metric files behind for good
    # The app's JSON line per request replaces Gunicorn's access line.
    assert (config["accesslog"], config["errorlog"]) == (None, "-")


def test_gunicorn_config_with_a_bad_variable_exits_with_one_clear_line():
    environ = {"PATH": os.environ.get("PATH", ""), "FACADE_READ_TIMEOUT_S": "-3"}
    code = "import runpy; runpy.run_path('facade/gunicorn.conf.py')"

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        "facade: invalid configuration: FACADE_READ_TIMEOUT_S=-3.0 is invalid: it must be a number of seconds above 0"
    )


def test_gunicorn_config_does_not_import_prometheus_client_before_its_workers_start():
    # prometheus_client picks multiprocess storage at import; the master must not import it first.
    environ = {"PATH": os.environ.get("PATH", ""), "FACADE_CONTAINER_ID": "box"}
    code = "import runpy, sys; runpy.run_path('facade/gunicorn.conf.py'); print('prometheus_client' in sys.modules)"

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_gunicorn_hooks_give_workers_a_fresh_metrics_folder_and_remove_it_on_exit(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "prometheus_client", raising=False)  # as in a fresh master
    config = run_gunicorn_config()

    config["on_starting"](None)
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

    assert folder.is_dir()
    assert folder.name.startswith("facade-metrics-")
    assert list(folder.iterdir()) == []
    (folder / "counter_123.db").write_bytes(b"")
    (folder / "gauge_livesum_123.db").write_bytes(b"")
    config["child_exit"](None, SimpleNamespace(pid=123))
    assert sorted(path.name for path in folder.iterdir()) == ["counter_123.db"]  # its counts stay
    config["on_exit"](None)
    assert not folder.exists()


def test_gunicorn_start_removes_metrics_folders_of_masters_that_are_gone(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "prometheus_client", raising=False)  # as in a fresh master
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    orphan = tmp_path / f"facade-metrics-{dead_pid}-abc123"
    live = tmp_path / f"facade-metrics-{os.getpid()}-def456"
    other = tmp_path / "facade-metrics-notes"
    for folder in (orphan, live, other):
        folder.mkdir()
    config = run_gunicorn_config()
    # run_path hands back a copy of the config's globals; the hooks read the originals.
    monkeypatch.setitem(config["on_starting"].__globals__, "SHM", str(tmp_path))

    config["on_starting"](None)
    mine = Path(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"))

    assert not orphan.exists()
    assert live.is_dir() and other.is_dir()
    assert mine.parent == tmp_path
    assert mine.name.startswith(f"facade-metrics-{os.getpid()}-")
    config["on_exit"](None)
    assert not mine.exists()


def test_gunicorn_hooks_empty_a_configured_metrics_folder_of_stale_files_only(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("FACADE_METRICS_DIR", str(tmp_path))
    (tmp_path / "counter_99.db").write_bytes(b"stale")
    (tmp_path / "histogram_98.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.delitem(sys.modules, "prometheus_client", raising=False)  # as in a fresh master
    config = run_gunicorn_config()

    config["on_starting"](None)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.txt"]
    config["on_exit"](None)
    assert tmp_path.is_dir()


def run_gunicorn_config() -> dict:
    return runpy.run_path(str(ROOT / "facade" / "gunicorn.conf.py"))
