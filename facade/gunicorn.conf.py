"""Gunicorn configuration for the facade: `python -m gunicorn -c facade/gunicorn.conf.py` from the repo root.

Every value comes from the FACADE_* variables through facade.settings.Settings.from_env().
"""

import logging
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

# Gunicorn loads this file by path, before it makes `chdir` importable: `python -m gunicorn` from
# the repo root is what makes `import facade` work here.
from facade.admission import gunicorn_threads
from facade.settings import Settings, SettingsError
from facade.wire import send_answers_in_one_write

ROOT = Path(__file__).resolve().parent.parent

try:
    settings = Settings.from_env()
except SettingsError as exc:
    # A clear one-line message instead of gunicorn's "Failed to read config file" traceback.
    sys.exit(f"facade: invalid configuration: {exc}")

wsgi_app = "facade:create_app()"
# In the master, before it forks the workers: a facade killed mid-answer then has sent nothing of it.
send_answers_in_one_write()
chdir = str(ROOT)

#
# Server socket
#

bind = f"{settings.host}:{settings.port}"
backlog = 2048

#
# Worker processes
#
#   gthread: the facade mostly waits on TorchServe, so threads, not processes, carry the load.
#            FACADE_THREADS classify at once, three times as many may wait for them, and two more
#            never classify, so /healthz and /readyz never wait behind work (facade/admission.py).
#   timeout: gthread workers heartbeat between requests, so this only catches a stuck worker;
#            it stays above the longest TorchServe call (connect twice, then read).
#   keepalive: nginx's upstream keepalive_timeout is 60 s; keeping idle connections longer here
#            means nginx always closes first and never reuses a connection Gunicorn is closing.
#   max_requests: 0, workers are not recycled. Each worker that ends leaves its metric files
#            behind (its counts must stay in the totals, see below), so periodic recycling would
#            grow the metrics folder, and every scrape's work, without bound: ~6 KB and ~0.1 ms
#            per dead worker, on /dev/shm, which Docker caps at 64 MB. Nothing in the facade
#            holds memory across requests, so recycling would guard against no known leak.
#

workers = settings.workers
worker_class = "gthread"
threads = gunicorn_threads(settings.threads)
timeout = math.ceil(2 * settings.connect_timeout_s + settings.read_timeout_s) + 10
graceful_timeout = settings.graceful_timeout_s
keepalive = 75
max_requests = 0
# Heartbeats fchmod a file; on a disk-backed /tmp that can block a worker, on tmpfs it cannot.
SHM = "/dev/shm"  # noqa: S108 - Gunicorn creates its heartbeat file there with mkstemp
worker_tmp_dir = SHM if os.path.isdir(SHM) else None
# Several instances share one host (and $HOME) and nothing here uses gunicornc.
control_socket_disable = True

#
# Logging
#

#   The app writes one JSON line per request (facade/observability.py) with everything Gunicorn's
#   access line had that nginx does not already log, plus route, container, texts and TorchServe
#   time; a second line per request would only double the volume, so the access log is off.
#

accesslog = None
errorlog = "-"
loglevel = settings.log_level.lower()

#
# Server hooks
#


# Prometheus multiprocess mode: every worker writes its metric values to files in one folder
# and a scrape of /metrics (answered by any worker) adds them up. The folder is this master's
# alone and starts empty: leftovers of an earlier run would be added in.
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRIC_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")
PRIVATE_PREFIX = "facade-metrics-"
metrics_dir = {"path": "", "private": False}


def on_starting(server):
    """Point the workers at an empty metrics folder before any of them imports prometheus_client."""
    if "prometheus_client" in sys.modules:
        # It picks single- or multi-process storage at import, and workers inherit the master's modules.
        sys.exit(
            "facade: prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set; see facade/metrics.py"
        )
    if settings.metrics_dir:
        metrics_dir.update(path=settings.metrics_dir, private=False)
        _remove_metric_files(settings.metrics_dir)
    else:
        parent = SHM if os.path.isdir(SHM) else tempfile.gettempdir()
        _remove_orphaned_folders(parent)
        folder = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=parent)
        metrics_dir.update(path=folder, private=True)
    os.environ[METRICS_ENV] = metrics_dir["path"]


def when_ready(server):
    """Log where the facade listens, which TorchServe it talks to and where the metric files are."""
    server.log.info(
        "facade %s listening on %s, TorchServe %s model %r, metrics at /metrics (files in %s)",
        settings.container_id,
        bind,
        settings.torchserve_url,
        settings.model_name,
        metrics_dir["path"],
    )


def post_worker_init(worker):
    """Send the app's log records through Gunicorn's error log; request lines as bare JSON."""
    app_log = logging.getLogger("facade")
    app_log.handlers = list(worker.log.error_log.handlers)
    app_log.setLevel(worker.log.error_log.level)
    app_log.propagate = False
    # One JSON object per line, nothing around it, so log tools can parse the lines as they are.
    json_lines = logging.StreamHandler(sys.stderr)
    json_lines.setFormatter(logging.Formatter("%(message)s"))
    request_log = logging.getLogger("facade.requests")
    request_log.handlers = [json_lines]
    request_log.setLevel(worker.log.error_log.level)
    request_log.propagate = False


def child_exit(server, worker):
    """Drop a dead worker's in-flight gauge; its counters and histograms stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir["path"])


def on_exit(server):
    """Remove this master's metric files (and its private folder)."""
    path = metrics_dir["path"]
    if not path:
        return
    if metrics_dir["private"]:
        shutil.rmtree(path, ignore_errors=True)  # made by mkdtemp above: ours alone
    else:
        _remove_metric_files(path)


def _remove_orphaned_folders(parent):
    # A master killed with SIGKILL never reaches on_exit; its folder names its pid, so the next
    # master to start removes the folders of masters that are gone (only this user's, only ours).
    for entry in Path(parent).glob(PRIVATE_PREFIX + "*"):
        match = re.fullmatch(re.escape(PRIVATE_PREFIX) + r"(\d+)-\w+", entry.name)
        if not match or entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != os.getuid():
            continue
        if not _is_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _is_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def _remove_metric_files(folder):
    for pattern in METRIC_FILES:
        for stale in Path(folder).glob(pattern):
            stale.unlink(missing_ok=True)
