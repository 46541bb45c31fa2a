"""Native launcher: TorchServe, REPLICAS Gunicorn facades and nginx on 127.0.0.1.

Usage: python -m stack up|down|status|logs

Settings (environment, with defaults): HTTP_PORT=8080 (nginx), REPLICAS=2,
FACADE_BASE_PORT (facade i listens on FACADE_BASE_PORT + i; default facade/settings.py's port),
TORCHSERVE_INFERENCE_PORT, TORCHSERVE_METRICS_PORT, TORCHSERVE_GRPC_INFERENCE_PORT,
TORCHSERVE_GRPC_MANAGEMENT_PORT (defaults: config.properties' addresses and ports; `up` names
each one that is taken), RUN_DIR=run (TorchServe's management API is the socket
RUN_DIR/management/management.sock, in a folder of mode 0700), LOG_DIR=logs,
START_TIMEOUT_S=180. The FACADE_* variables reach every facade; nginx's body limit is the facade's
max_body_bytes, and its wait for a facade's answer follows the facade's read timeout.
Each server runs as its own process group; `down` stops every process
of every group it started (launchers, Java, workers, masters) and is safe to run twice.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from facade.settings import Settings as FacadeSettings
from facade.settings import SettingsError
from stack.processes import StartupError, group_members, http_status, start_group, stop_group, wait_until
from stack.torchserve import PROJECT_DIR, TorchServeSettings, start_torchserve, stop_torchserve

NGINX_DIR = PROJECT_DIR / "nginx"
# Above nginx's retry window (proxy_next_upstream_timeout in nginx.conf.template), so that nginx
# never replays a request whose answer timed out; tests/unit/test_seams.py holds the two together.
MIN_PROXY_READ_TIMEOUT_S = 3
# How often `make up` says what it still waits for while the model loads.
PROGRESS_EVERY_S = 5
# nginx's tunables, read from the environment as the Docker image reads them; their defaults are
# nginx/defaults.env's. name -> (pattern the value must match, what it allows).
NGINX_DEFAULTS_FILE = NGINX_DIR / "defaults.env"
NGINX_SETTINGS = {
    "NGINX_CLIENT_TIMEOUT": (r"[1-9][0-9]*(ms|s|m)?", "a duration such as 10s or 500ms"),
    "NGINX_LIMIT_REQ": (r"on|off", "on or off (a per-client rate limit)"),
    "NGINX_LIMIT_REQ_RATE": (r"[1-9][0-9]*r/[sm]", "requests per client per second or minute, e.g. 10r/s"),
    "NGINX_LIMIT_REQ_BURST": (r"[1-9][0-9]*", "requests above the rate let through at once, at least 1"),
    "NGINX_LIMIT_CONN": (r"on|off", "on or off (a per-client limit on requests in progress)"),
    "NGINX_LIMIT_CONN_PER_CLIENT": (r"[1-9][0-9]*", "requests in progress per client address, at least 1"),
}


def facade_settings(environ):
    """Return the FACADE_* settings the replicas will start with, or exit saying which one is wrong."""
    try:
        return FacadeSettings.from_env(environ)
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


@dataclass(frozen=True)
class StackSettings:
    """Ports, replica count and folders of one native stack."""

    http_port: int = 8080
    replicas: int = 2
    facade_base_port: int = FacadeSettings.port
    torchserve: TorchServeSettings = field(default_factory=TorchServeSettings)
    # The FACADE_* settings every replica starts with (the launcher reads the body limit from it).
    facade: FacadeSettings = field(default_factory=FacadeSettings)
    run_dir: Path = PROJECT_DIR / "run"
    log_dir: Path = PROJECT_DIR / "logs"
    start_timeout_s: float = 180.0

    @classmethod
    def from_env(cls, environ=os.environ):
        """Return the settings named in the module docstring."""

        def number(name, default, minimum=1):
            value = environ.get(name) or str(default)
            if not value.isdigit() or int(value) < minimum:
                raise SystemExit(f"error: {name} must be a whole number >= {minimum}, got {value!r}")
            return int(value)

        run_dir = Path(environ.get("RUN_DIR") or PROJECT_DIR / "run").resolve()
        log_dir = Path(environ.get("LOG_DIR") or PROJECT_DIR / "logs").resolve()
        return cls(
            http_port=number("HTTP_PORT", cls.http_port),
            replicas=number("REPLICAS", cls.replicas),
            facade_base_port=number("FACADE_BASE_PORT", FacadeSettings.port),
            torchserve=TorchServeSettings(
                inference_port=number("TORCHSERVE_INFERENCE_PORT", TorchServeSettings.inference_port),
                metrics_port=number("TORCHSERVE_METRICS_PORT", TorchServeSettings.metrics_port),
                grpc_inference_port=number("TORCHSERVE_GRPC_INFERENCE_PORT", TorchServeSettings.grpc_inference_port),
                grpc_management_port=number("TORCHSERVE_GRPC_MANAGEMENT_PORT", TorchServeSettings.grpc_management_port),
                model_store=Path(environ.get("MODEL_STORE") or PROJECT_DIR / "model-store").resolve(),
                run_dir=run_dir,
                log_dir=log_dir,
            ),
            run_dir=run_dir,
            log_dir=log_dir,
            start_timeout_s=float(number("START_TIMEOUT_S", 180)),
            facade=facade_settings(environ),
        )

    @property
    def url(self):
        """Return the public URL (nginx)."""
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def facade_ports(self):
        """Return the port of each facade replica."""
        return [self.facade_base_port + index for index in range(self.replicas)]

    @property
    def state_file(self):
        """Return the file that records the process groups of a running stack."""
        return self.run_dir / "stack.json"


def facade_env(settings, port, base_env=os.environ):
    """Return the environment of the facade replica on `port`."""
    return {
        **base_env,
        "FACADE_HOST": "127.0.0.1",
        "FACADE_PORT": str(port),
        "FACADE_TORCHSERVE_URL": settings.torchserve.inference_url,
        "FACADE_MODEL_NAME": settings.torchserve.model_name,
        # Replicas share one host (which may itself be a container): name each by its port.
        "FACADE_CONTAINER_ID": base_env.get("FACADE_CONTAINER_ID") or f"{socket.gethostname()}-{port}",
    }


def start_facade(settings, port):
    """Start one Gunicorn facade on `port`; return the Popen (not yet waited for)."""
    return start_group(
        [sys.executable, "-m", "gunicorn", "-c", str(PROJECT_DIR / "facade" / "gunicorn.conf.py")],
        env=facade_env(settings, port),
        log_path=settings.log_dir / f"facade-{port}.log",
        cwd=PROJECT_DIR,
    )


def render(template_path, values):
    """Fill the ${NGINX_*} placeholders of a template; nginx's own $variables stay as they are."""
    return string.Template(template_path.read_text()).safe_substitute(values)


def nginx_defaults(path=NGINX_DEFAULTS_FILE):
    """Return the NAME=value lines of nginx/defaults.env (comments and blank lines skipped)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def nginx_settings(environ=os.environ):
    """Return the NGINX_SETTINGS values from the environment (defaults when unset or empty)."""
    defaults = nginx_defaults()
    values = {}
    for name, (pattern, allowed) in NGINX_SETTINGS.items():
        value = environ.get(name) or defaults[name]
        if not re.fullmatch(pattern, value):
            raise StartupError(f"{name}={value!r} is invalid: it must be {allowed}")
        values[name] = value
    return values


def size_label(size_bytes):
    """Return a byte count as people read it in an error message: 1 MiB, 512 KiB, 1000 bytes."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes % scale == 0:
            return f"{size_bytes // scale} {unit}"
    return f"{size_bytes} bytes"


def proxy_read_timeout(facade):
    """Return how long nginx waits for a facade's answer: twice the facade's read timeout, and never
    under the facade's longest answer (the read timeout, a retry included, plus connecting twice),
    so that the facade's own JSON 504 always comes first. Never under 3 s either: nginx retries a
    request for 2.5 s after its first try (nginx.conf.template), and a read timeout must not be
    one it retries."""
    longest_answer_s = 2 * facade.connect_timeout_s + facade.read_timeout_s + 1
    return f"{math.ceil(max(2 * facade.read_timeout_s, longest_answer_s, MIN_PROXY_READ_TIMEOUT_S))}s"


def nginx_config(settings):
    """Write the nginx config of this stack under the run dir; return its path."""
    nginx_run = settings.run_dir / "nginx"
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (nginx_run / temp).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # nginx started by root runs its workers as nobody
            shutil.chown(nginx_run / temp, user="nobody")
    servers = "\n".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in settings.facade_ports)
    topology = nginx_run / "topology.conf"
    topology.write_text(render(NGINX_DIR / "topology.native.conf.template", {"NGINX_FACADE_SERVERS": servers}))
    config = nginx_run / "nginx.conf"
    values = {
        "NGINX_RUN_DIR": str(nginx_run),
        "NGINX_ERROR_LOG": str(settings.log_dir / "nginx-error.log"),
        "NGINX_ACCESS_LOG": str(settings.log_dir / "nginx-access.log"),
        # nginx refuses what the facade would refuse anyway, before it reaches a facade.
        "NGINX_MAX_BODY_SIZE": str(settings.facade.max_body_bytes),
        "NGINX_MAX_BODY_LABEL": size_label(settings.facade.max_body_bytes),
        "NGINX_PROXY_READ_TIMEOUT": proxy_read_timeout(settings.facade),
        "NGINX_TOPOLOGY_CONF": str(topology),
        "NGINX_LISTEN": f"127.0.0.1:{settings.http_port}",
        **nginx_settings(),
    }
    config.write_text(render(NGINX_DIR / "nginx.conf.template", values))
    return config


def nginx_binary():
    """Return the nginx executable (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise StartupError("nginx is not installed: run `make install` (or apt-get install nginx-light)")
    return found


def start_nginx(settings):
    """Start nginx in the foreground of its own process group; return the Popen."""
    config = nginx_config(settings)
    # -e: nginx opens its compiled-in error log before reading the config.
    command = [nginx_binary(), "-c", str(config), "-e", str(settings.log_dir / "nginx-error.log")]
    return start_group(
        [*command, "-g", "daemon off;"], env=dict(os.environ), log_path=settings.log_dir / "nginx.log", cwd=PROJECT_DIR
    )


def running_groups(settings):
    """Return the recorded process groups of a running stack ({name: pgid}), or {}."""
    try:
        return json.loads(settings.state_file.read_text())["groups"]
    except (OSError, ValueError, KeyError):
        return {}


def bound_ports(settings):
    """Return [(port, setting that moves it, what listens there)] for every port the stack binds."""
    torchserve = settings.torchserve
    return [
        (settings.http_port, "HTTP_PORT", "nginx"),
        *((port, "FACADE_BASE_PORT", f"facade {port}") for port in settings.facade_ports),
        (torchserve.inference_port, "TORCHSERVE_INFERENCE_PORT", "TorchServe inference"),
        (torchserve.metrics_port, "TORCHSERVE_METRICS_PORT", "TorchServe metrics"),
        (torchserve.grpc_inference_port, "TORCHSERVE_GRPC_INFERENCE_PORT", "TorchServe gRPC inference"),
        (torchserve.grpc_management_port, "TORCHSERVE_GRPC_MANAGEMENT_PORT", "TorchServe gRPC management"),
    ]


def port_taken(port):
    """Return whether something on this machine already holds `port` on 127.0.0.1."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def check_ports(settings):
    """Raise StartupError naming every port of the stack that is taken and the setting that moves it."""
    taken = [(port, setting, what) for port, setting, what in bound_ports(settings) if port_taken(port)]
    if taken:
        lines = "\n".join(
            f"  port {port} ({what}): move it with {setting}=<free port>" for port, setting, what in taken
        )
        raise StartupError(f"ports the stack needs are in use on 127.0.0.1:\n{lines}\nthen run `make up` again")


def record(settings, groups):
    """Write the process groups of the stack so `down` can stop them from another process."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.state_file.write_text(json.dumps({"url": settings.url, "groups": groups}, indent=2))


def up(settings):
    """Start the whole stack, wait until /readyz answers 200 through nginx; return {name: Popen}."""
    if any(group_members(pgid) for pgid in running_groups(settings).values()):
        raise StartupError(f"the stack is already running ({settings.state_file}); run `make down` first")
    check_ports(settings)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    processes = {}
    try:
        # Facades and nginx start while TorchServe loads the model; /readyz waits for all.
        for port in settings.facade_ports:
            processes[f"facade-{port}"] = start_facade(settings, port)
        processes["nginx"] = nginx = start_nginx(settings)
        record(settings, {name: process.pid for name, process in processes.items()})
        processes["torchserve"] = start_torchserve(
            settings.torchserve, timeout_s=settings.start_timeout_s, progress_every_s=PROGRESS_EVERY_S
        )
        record(settings, {name: process.pid for name, process in processes.items()})
        wait_until(
            lambda: http_status(f"{settings.url}readyz") == 200,
            timeout_s=settings.start_timeout_s,
            what="the service (GET /readyz through nginx)",
            log_path=settings.log_dir,
            process=nginx,
            progress_every_s=PROGRESS_EVERY_S,
        )
        # Ready through nginx needs one facade; "up" means every replica serves.
        for port in settings.facade_ports:
            wait_until(
                lambda port=port: http_status(f"http://127.0.0.1:{port}/healthz") == 200,
                timeout_s=settings.start_timeout_s,
                what=f"the facade on port {port}",
                log_path=settings.log_dir / f"facade-{port}.log",
                process=processes[f"facade-{port}"],
            )
    except BaseException:
        down(settings, quiet=True)
        raise
    return processes


def stop_nginx(pgid, timeout_s=35.0):
    """Stop nginx gracefully: SIGQUIT lets requests in flight finish (SIGTERM would drop them)."""
    # worker_shutdown_timeout (proxy_read_timeout) bounds the wait; SIGKILL only if it is exceeded.
    return stop_group(pgid, timeout_s=timeout_s, stop_signal=signal.SIGQUIT)


def down(settings, quiet=False):
    """Stop every process group the stack started, gracefully and from the front; safe when nothing runs.

    nginx first (it stops accepting, finishes what is in flight), then the facades (Gunicorn's
    SIGTERM is graceful: workers finish their requests), TorchServe last, since it drops the
    requests it is running when it stops.
    """
    groups = running_groups(settings)
    order = sorted(groups, key=lambda name: (name != "nginx", name == "torchserve"))
    shutdown_s = int(proxy_read_timeout(settings.facade).removesuffix("s")) + 5
    stoppers = {"nginx": lambda pgid: stop_nginx(pgid, shutdown_s), "torchserve": stop_torchserve}
    leftovers = {}
    for name in order:
        if not stoppers.get(name, stop_group)(groups[name]):
            leftovers[name] = group_members(groups[name])
    settings.state_file.unlink(missing_ok=True)
    if not quiet:
        print("Stopped: " + (", ".join(order) if order else "nothing was running"))
    if leftovers:
        raise StartupError(f"processes survived SIGKILL: {leftovers}")


def status(settings):
    """Print each recorded process group and how many live processes it has."""
    groups = running_groups(settings)
    if not groups:
        print("not running")
    for name, pgid in groups.items():
        print(f"{name:<16} pgid {pgid:<8} {len(group_members(pgid))} process(es)")


def logs(settings):
    """Print where each component logs, with the last lines of each log."""
    print(f"Logs are in {settings.log_dir}:")
    for path in sorted(settings.log_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-5:]
        print(f"\n== {path} ==")
        print("\n".join(lines))


def main(argv=None):
    """Command-line entry point."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"up": up, "down": down, "status": status, "logs": logs}
    if len(argv) != 1 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    settings = StackSettings.from_env()
    try:
        commands[argv[0]](settings)
    except (StartupError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if argv[0] == "up":
        print(f"The service is up: {settings.url}  (logs: {settings.log_dir}; stop with `make down`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
