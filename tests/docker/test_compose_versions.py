"""Both Composes a user may have read docker-compose.yml alike: v2 (`docker compose`) and 1.29.

A Docker test, not a unit one: the Compose v2 plugin is what .ci/docker-engine.sh installs on a
Debian 12 host, so a fresh machine has it only once the engine is ensured. No stack is started.
"""

import os
import shutil
import subprocess

import pytest
import yaml

from tests.docker.conftest import COMPOSE_FILE, ensure_engine, has_compose_v2

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", autouse=True)
def engine():
    """Install (as root) and start the engine with both Composes, as the Docker tests run them."""
    ensure_engine()


def compose_config(command):
    """Return what one Compose makes of docker-compose.yml (its `config`), skipping without that Compose."""
    if shutil.which(command[0]) is None:
        pytest.skip(f"needs {' '.join(command)}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    if command == ["docker", "compose"] and not has_compose_v2(env):
        pytest.skip("needs the Compose v2 plugin (.ci/docker-engine.sh installs it)")
    result = subprocess.run(
        # Every profile: v2 leaves a service of an inactive profile out of `config`, 1.29 does not.
        [*command, "-f", str(COMPOSE_FILE), "--profile", "tools", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def what_runs(service):
    """Return the parts of a service that decide what runs, in a form both Composes print alike."""
    build = service.get("build") or {}
    return {
        "image": service.get("image"),
        "target": build.get("target"),
        "args": {name: str(value) for name, value in (build.get("args") or {}).items()},
        "environment": {name: str(value) for name, value in (service.get("environment") or {}).items()},
        "depends_on": {name: dep.get("condition") for name, dep in (service.get("depends_on") or {}).items()},
        "networks": sorted(service.get("networks") or {}),
        "read_only": service.get("read_only"),
        "cap_drop": service.get("cap_drop"),
        "command": service.get("command"),
    }


def test_compose_v2_and_docker_compose_1_29_read_the_same_services():
    # The Docker tests run on Compose v2; this keeps Debian 12's docker-compose 1.29 reading the file
    # the same way (the engine underneath is the same).
    v2 = compose_config(["docker", "compose"])
    v1 = compose_config(["docker-compose"])
    assert {name: what_runs(service) for name, service in v1.items()} == {
        name: what_runs(service) for name, service in v2.items()
    }
