"""Gunicorn configuration for the facade: `gunicorn -c facade/gunicorn.conf.py` from the repo root.

Every value comes from the FACADE_* variables through facade.settings.Settings.from_env().
"""

import logging
import math
import os
import sys
from pathlib import Path

# Gunicorn loads this file by path; make `import facade` work from any working directory.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from facade.settings import Settings, SettingsError  # noqa: E402 - needs the path above

try:
    settings = Settings.from_env()
except SettingsError as exc:
    # A clear one-line message instead of gunicorn's "Failed to read config file" traceback.
    sys.exit(f"facade: invalid configuration: {exc}")

wsgi_app = "facade:create_app()"
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
#   timeout: gthread workers heartbeat between requests, so this only catches a stuck worker;
#            it stays above the longest TorchServe call (connect twice, then read).
#   keepalive: nginx's upstream keepalive_timeout is 60 s; keeping idle connections longer here
#            means nginx always closes first and never reuses a connection Gunicorn is closing.
#   max_requests: recycle workers now and then so slow leaks cannot grow without bound.
#

workers = settings.workers
worker_class = "gthread"
threads = settings.threads
timeout = math.ceil(2 * settings.connect_timeout_s + settings.read_timeout_s) + 10
graceful_timeout = settings.graceful_timeout_s
keepalive = 75
max_requests = 10000
max_requests_jitter = 1000
# Heartbeats fchmod a file; on a disk-backed /tmp that can block a worker, on tmpfs it cannot.
SHM = "/dev/shm"  # noqa: S108 - Gunicorn creates its heartbeat file there with mkstemp
worker_tmp_dir = SHM if os.path.isdir(SHM) else None
# Several instances share one host (and $HOME) and nothing here uses gunicornc.
control_socket_disable = True

#
# Logging
#

accesslog = "-"
errorlog = "-"
loglevel = settings.log_level.lower()
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'

#
# Server hooks
#


def when_ready(server):
    """Log where the facade listens and which TorchServe it talks to."""
    server.log.info(
        "facade %s listening on %s, TorchServe %s model %r",
        settings.container_id,
        bind,
        settings.torchserve_url,
        settings.model_name,
    )


def post_worker_init(worker):
    """Send the app's own log records through Gunicorn's error log, at its level."""
    app_log = logging.getLogger("facade")
    app_log.handlers = list(worker.log.error_log.handlers)
    app_log.setLevel(worker.log.error_log.level)
    app_log.propagate = False
