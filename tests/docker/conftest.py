"""A private Compose stack for the Docker tests: own project name, free loopback ports, torn down.

The session-scoped `stack` fixture (one stack for every module here) makes sure an engine runs
(.ci/docker-engine.sh), builds on the local base-image stand-ins (.ci/build-base-images.sh makes
them: the CI has no registry) unless PYTHON_IMAGE / DEBIAN_IMAGE name other base images, puts the
local CPU torch wheel in wheels/ (`make docker-wheels`), builds the images, starts the stack from
the trained stand-in model in ../shared, measures a cold start, and always removes everything with
the project's label at the end.

Modules run in file order (test_compose, test_faults, test_lockdown); a test marked `stops_stack`
leaves the stack stopped, so it is moved behind every other test.
"""

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from stack.private import free_port
from tests.conftest import PROJECT_DIR

BASE_IMAGES_SCRIPT = PROJECT_DIR / ".ci" / "build-base-images.sh"
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"


def standin_bases(arch=None):
    """Return {build argument: stand-in tag} as .ci/build-base-images.sh names them (for `arch`)."""
    command = ["bash", str(BASE_IMAGES_SCRIPT), "--print-tags", *(["--arch", arch] if arch else [])]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(pair.split("=", 1) for pair in printed.split())


# The Dockerfile's base-image build arguments -> the stand-ins .ci/build-base-images.sh makes.
STANDIN_BASES = standin_bases()
# What these tests build on: base images the environment names, else the stand-ins.
BASES = {arg: os.environ.get(arg) or standin for arg, standin in STANDIN_BASES.items()}
BASE_IMAGES = {"sentiment-torchserve": BASES["PYTHON_IMAGE"], "sentiment-facade": BASES["PYTHON_IMAGE"]}
IMAGES = ("sentiment-torchserve", "sentiment-facade", "sentiment-nginx")
NGINX_BASE = BASES["DEBIAN_IMAGE"]
START_TIMEOUT_S = 300
# Run inside a TorchServe container, as operators' tools do: one management API call over its
# Unix socket (tools/management.py, the image's configured address), printing status and body.
MANAGEMENT_CALL = """
import sys
from tools import management
response = management.request(management.default_address(), sys.argv[1], sys.argv[2], timeout=10)
print(response.status_code); print(response.text)
"""
BUILD_TIMEOUT_S = 1500


def pytest_configure(config):
    """Register the marker of the test that ends with the shared stack stopped."""
    config.addinivalue_line("markers", "stops_stack: leaves the shared Docker stack stopped; runs after the others")


def pytest_collection_modifyitems(items):
    """Move the tests marked `stops_stack` behind every other test (a stable sort)."""
    items.sort(key=lambda item: item.get_closest_marker("stops_stack") is not None)


def run(command, *, timeout=120, check=True, env=None):
    """Run a command from the project root; return the CompletedProcess (text), fail readably."""
    result = subprocess.run(
        command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout (tail)\n{result.stdout[-4000:]}\n--- stderr (tail)\n{result.stderr[-4000:]}"
        )
    return result


def has_compose_v2(env=None):
    """Return whether the docker client has the Compose v2 plugin.

    Without it the CLI does not say so: `docker compose -f ...` reads `-f` as its own unknown flag.
    """
    probe = subprocess.run(["docker", "compose", "version"], env=env, capture_output=True, check=False, timeout=60)
    return probe.returncode == 0


def compose_command():
    """`docker compose` when the client has the v2 plugin, else docker-compose (as the Makefile)."""
    return ["docker", "compose"] if has_compose_v2() else ["docker-compose"]


def image_size(image):
    """Return the image's size in bytes."""
    return int(run(["docker", "image", "inspect", "-f", "{{.Size}}", image]).stdout)


@dataclass
class Stack:
    """One running Compose project and what was measured while bringing it up."""

    project: str
    http_port: int
    env: dict
    compose: list
    measurements: dict = field(default_factory=dict)

    @property
    def url(self):
        """Return nginx's public URL."""
        return f"http://127.0.0.1:{self.http_port}"

    def management(self, method, path):
        """Ask TorchServe's management API from inside its first container (it listens on a Unix
        socket there and on no port); return (status, body text)."""
        container = self.container_ids("torchserve")[0]
        result = run(["docker", "exec", container, "python", "-c", MANAGEMENT_CALL, method, path])
        status, _, body = result.stdout.partition("\n")
        return int(status), body

    def compose_run(self, *args, timeout=300, check=True):
        """Run a compose command for this project."""
        return run([*self.compose, "-p", self.project, *args], timeout=timeout, check=check, env=self.env)

    def container_ids(self, service):
        """Return the full IDs of the service's running containers."""
        out = self.compose_run("ps", "-q", service).stdout.split()
        return [cid for cid in out if self.inspect(cid)["State"]["Running"]]

    def inspect(self, container):
        """Return `docker inspect` of one container."""
        return json.loads(run(["docker", "inspect", container]).stdout)[0]

    def service_of(self, container):
        """Return the Compose service a container belongs to."""
        return self.inspect(container)["Config"]["Labels"]["com.docker.compose.service"]

    def labelled(self, kind):
        """Return the names/IDs of containers, networks or volumes that carry this project's label."""
        label = f"label=com.docker.compose.project={self.project}"
        if kind == "container":
            command = ["docker", "ps", "-a", "-q", "--filter", label]
        else:
            command = ["docker", kind, "ls", "-q", "--filter", label]
        return run(command).stdout.split()

    def wait_ready(self, timeout_s=START_TIMEOUT_S):
        """Wait until GET /readyz through nginx answers 200; return the seconds it took."""
        start = time.monotonic()
        last = None
        while time.monotonic() - start < timeout_s:
            try:
                response = requests.get(f"{self.url}/readyz", timeout=2)
                if response.status_code == 200:
                    return time.monotonic() - start
                last = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.25)
        logs = self.compose_run("logs", "--tail=30", check=False).stdout
        pytest.fail(f"{self.url}/readyz not 200 within {timeout_s}s (last: {last})\n{logs[-6000:]}")

    def wait_healthy(self, services=("torchserve", "app", "nginx"), timeout_s=START_TIMEOUT_S):
        """Wait until Docker reports every container of `services` healthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = {
                cid[:12]: self.inspect(cid)["State"].get("Health", {}).get("Status")
                for service in services
                for cid in self.container_ids(service)
            }
            if states and set(states.values()) == {"healthy"}:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"not all healthy within {timeout_s}s: {states}")
            time.sleep(0.5)


def ensure_engine():
    """Start (and if needed install) the Docker engine, or skip when this user cannot."""
    if os.geteuid() != 0 and not shutil.which("docker"):
        pytest.skip("needs Docker: run as root (.ci/docker-engine.sh installs and starts it) or install it")
    result = subprocess.run(
        ["bash", ".ci/docker-engine.sh"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(f"no Docker engine answers and starting one needs root: {result.stderr.strip()[-300:]}")
        pytest.fail(f".ci/docker-engine.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def stack(standin_model_dir):
    """Build the images, start `up --build --scale app=3` in a private project; remove it afterwards."""
    ensure_engine()
    if set(BASES.values()) & set(STANDIN_BASES.values()):
        run(["bash", ".ci/build-base-images.sh"], timeout=900)
    run(["make", "--no-print-directory", "docker-wheels"], timeout=900)

    project = f"sentiment-test-{uuid.uuid4().hex[:8]}"
    http_port = free_port()
    env = {
        **os.environ,
        "HTTP_PORT": str(http_port),
        "HTTP_BIND": "127.0.0.1",
        "MODEL_DIR": str(Path(standin_model_dir).resolve()),
        **BASES,
    }
    for name in ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "DOCKER_HOST"):
        env.pop(name, None)
    stack = Stack(project, http_port, env, compose_command())
    try:
        start = time.monotonic()
        stack.compose_run("build", timeout=BUILD_TIMEOUT_S)
        stack.measurements["build_s"] = time.monotonic() - start

        start = time.monotonic()
        stack.compose_run("up", "-d", "--build", "--scale", "app=3", timeout=START_TIMEOUT_S)
        stack.wait_ready()
        stack.wait_healthy()
        stack.measurements["up_build_s"] = time.monotonic() - start

        # Cold start once the images exist: no containers, no model store, fresh volumes.
        stack.compose_run("down", "-v", "--remove-orphans")
        start = time.monotonic()
        stack.compose_run("up", "-d", "--scale", "app=3", timeout=START_TIMEOUT_S)
        stack.wait_ready()
        stack.measurements["cold_up_s"] = time.monotonic() - start
        stack.wait_healthy()
        stack.measurements["cold_up_healthy_s"] = time.monotonic() - start
        yield stack
    finally:
        stack.compose_run("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        left = {kind: stack.labelled(kind) for kind in ("container", "network", "volume")}
        assert left == {"container": [], "network": [], "volume": []}, f"{project} left behind {left}"
