"""The Swarm stack for real, on a one-node swarm: `make swarm-up`, scale, rolling restart, faults,
a model upgrade and a rollback.

One deployment (module fixture) serves every check; `make swarm-down` ends it and is itself
checked. The engine's swarm state is restored as found, also when a test fails: a swarm this
module created is left again, a swarm the engine was already in is used and left in place.
Images are built by `make swarm-up` (cached when the Compose tests built them before).
"""

import json
import os
import sys
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager

import pytest
import requests

from stack.private import build_archive, free_port
from tests.docker.conftest import BASES, STANDIN_BASES, ensure_engine, run
from tests.load import steady_load as versioned_load

from sentiment_info import BUILD_INFO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MAKE_TIMEOUT_S = 1800
CLIENTS = 3
CLIENT_TIMEOUT_S = 20
TEXT = "It is worth it"


def swarm_state():
    """Return the engine's swarm state: inactive, active, pending, ..."""
    return run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()


class SwarmStack:
    """A stack deployed with the Makefile's swarm-* targets under a private name and port."""

    def __init__(self, model_dir, model_store):
        self.name = f"sentiment-test-{uuid.uuid4().hex[:6]}"
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "STACK": self.name,
            "HTTP_PORT": str(self.http_port),
            "MODEL_DIR": str(model_dir),
            "MODEL_STORE": str(model_store),
            # The venv this test runs in builds the .mar (`make mar`).
            "VENV": sys.prefix,
            # The same base images as the Compose tests (the CI has no registry: local stand-ins).
            **BASES,
        }

    @property
    def url(self):
        """Return nginx's URL (host-mode published port)."""
        return f"http://127.0.0.1:{self.http_port}"

    def make(self, target, *assignments, timeout=600, check=True):
        """Run `make <target>` as a user would; fail readably."""
        return run(["make", "--no-print-directory", target, *assignments], timeout=timeout, check=check, env=self.env)

    def containers(self, service):
        """Return the IDs of the service's running containers on this node."""
        label = f"label=com.docker.swarm.service.name={self.name}_{service}"
        return run(["docker", "ps", "-q", "--no-trunc", "--filter", label]).stdout.split()

    def leftovers(self):
        """Return whatever of the stack still exists: services, containers, networks, volumes, configs, secrets."""
        label = f"label=com.docker.stack.namespace={self.name}"
        found = {"container": run(["docker", "ps", "-aq", "--filter", label]).stdout.split()}
        for kind in ("service", "network", "volume", "config", "secret"):
            found[kind] = run(["docker", kind, "ls", "-q", "--filter", label], check=False).stdout.split()
        return {kind: ids for kind, ids in found.items() if ids}

    def container_ids_seen(self, requests_count):
        """Return the X-Container-ID values of `requests_count` POSTs through nginx."""
        seen = set()
        with requests.Session() as session:
            for _ in range(requests_count):
                response = session.post(f"{self.url}/", json={"text": TEXT}, timeout=CLIENT_TIMEOUT_S)
                assert response.status_code == 200, response.text
                seen.add(response.headers["X-Container-ID"])
        return seen

    def logs_since(self, moment, services=("app", "torchserve")):
        """Return the services' log lines since `moment` (a `docker service logs --since` value): for failures."""
        logs = []
        for service in services:
            found = run(
                ["docker", "service", "logs", "--timestamps", "--since", moment, f"{self.name}_{service}"],
                check=False,
                timeout=60,
            )
            logs.append(f"--- {service} ---\n{(found.stdout + found.stderr)[-6000:]}")
        return "\n".join(logs)

    def wait_until(self, predicate, timeout_s, what):
        """Poll `predicate` every 0.5 s; fail with `what` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                tasks = run(["docker", "stack", "ps", self.name], check=False).stdout
                pytest.fail(f"{what} not within {timeout_s} s\n{tasks[-4000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def swarm(standin_model_dir, tmp_path_factory):
    """`make swarm-up` once for the module; `make swarm-down` and the swarm restored at the end."""
    ensure_engine()
    state_before = swarm_state()
    if state_before not in ("inactive", "active"):
        pytest.skip(f"the engine's swarm state is {state_before!r}; needs inactive or active")
    if set(BASES.values()) & set(STANDIN_BASES.values()):
        run(["bash", ".ci/build-base-images.sh"], timeout=900)
    stack = SwarmStack(standin_model_dir.resolve(), tmp_path_factory.mktemp("swarm-model-store"))
    try:
        stack.make("swarm-up", timeout=MAKE_TIMEOUT_S)
        yield stack
    finally:
        stack.make("swarm-down", check=False)
        if state_before == "inactive" and swarm_state() != "inactive":
            run(["docker", "swarm", "leave", "--force"], check=False)


def engine_now():
    """Return the current time as `docker service logs --since` takes it (RFC 3339, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))


class Load:
    """What a steady load saw: the failures, when each request was answered (monotonic s) and how
    long each took."""

    def __init__(self):
        self.failures, self.answered, self.took = [], [], []

    def answered_after(self, moment):
        """Return how many requests were answered after `moment`."""
        return sum(1 for end in list(self.answered) if end > moment)


@contextmanager
def steady_load(url):
    """Keep CLIENTS clients POSTing through nginx; yield the Load they fill."""
    load, stop = Load(), threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = session.post(f"{url}/", json={"text": TEXT}, timeout=CLIENT_TIMEOUT_S)
                    if response.status_code != 200:
                        load.failures.append(f"{response.status_code}: {response.text[:200]}")
                except requests.RequestException as exc:
                    load.failures.append(repr(exc))
                load.answered.append(time.monotonic())
                load.took.append(load.answered[-1] - started)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S + 5)


def keep_loading_past(load, moment, timeout_s=60):
    """Wait until the load got answers after `moment` (every client, roughly), however slow the host."""
    deadline = time.monotonic() + timeout_s
    while load.answered_after(moment) < 2 * CLIENTS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert load.answered_after(moment) >= 2 * CLIENTS, "the load stalled"


def test_swarm_up_serves_through_nginx_with_two_torchserves_and_the_model_baked_into_the_image(swarm):
    response = requests.post(f"{swarm.url}/", json={"text": "A wonderful, moving film."}, timeout=30)

    assert response.status_code == 200, response.text
    assert response.json()["label"] == "POSITIVE"
    torchserves = swarm.containers("torchserve")
    assert len(torchserves) == 2
    for torchserve in torchserves:
        image = run(["docker", "inspect", "-f", "{{.Config.Image}}", torchserve]).stdout
        assert image.startswith("sentiment-torchserve-model")
        assert run(["docker", "inspect", "-f", "{{.Config.User}}", torchserve]).stdout.strip() == "10001:10001"


def test_nginx_cannot_reach_torchserve_and_its_management_port_is_not_published(swarm):
    [nginx] = swarm.containers("nginx")
    reach = run(["docker", "exec", nginx, "bash", "-c", "exec 3<>/dev/tcp/torchserve/8090"], check=False, timeout=30)
    published = run(["docker", "service", "inspect", "-f", "{{json .Endpoint.Ports}}", f"{swarm.name}_torchserve"])

    assert reach.returncode != 0
    assert published.stdout.strip() in ("null", "[]")


def test_swarm_scale_app_3_shows_three_facades_through_nginx_within_30_requests(swarm):
    swarm.make("swarm-scale", "APP=3", "WORKERS=2")
    swarm.wait_until(lambda: len(swarm.container_ids_seen(30)) == 3, 30, "3 facade IDs through nginx")
    expected = {container[:12] for container in swarm.containers("app")}

    assert swarm.container_ids_seen(30) == expected
    for torchserve in swarm.containers("torchserve"):
        workers = run(["docker", "exec", torchserve, "python", "-m", "tools.healthcheck"]).stdout
        assert "2 READY of 2 workers" in workers


def test_scaling_facades_1_to_3_to_1_under_load_loses_no_request(swarm):
    swarm.make("swarm-scale", "APP=1", "WORKERS=1")
    started = engine_now()
    with steady_load(swarm.url) as load:
        for replicas in (3, 1):
            swarm.make("swarm-scale", f"APP={replicas}")
            swarm.wait_until(lambda n=replicas: len(swarm.containers("app")) == n, 60, f"{replicas} facades")
            # nginx re-resolves every 2 s: the load meets the new set of replicas.
            keep_loading_past(load, time.monotonic() + 3)

    assert load.failures == [], swarm.logs_since(started)


def test_a_rolling_restart_of_the_facades_under_load_loses_no_request(swarm):
    swarm.make("swarm-scale", "APP=2")
    before = set(swarm.containers("app"))
    started = engine_now()
    with steady_load(swarm.url) as load:
        run(["docker", "service", "update", "--force", "--detach", f"{swarm.name}_app"])
        swarm.wait_until(
            lambda: set(swarm.containers("app")).isdisjoint(before) and len(swarm.containers("app")) == 2,
            120,
            "every facade replaced",
        )
        keep_loading_past(load, time.monotonic() + 3)

    assert load.failures == [], swarm.logs_since(started)


def healthy(container):
    """Return True when Docker reports the container's health check passing."""
    status = run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container], check=False).stdout.strip()
    return status == "healthy"


def test_killing_one_of_two_torchserve_containers_under_load_loses_no_request_three_times(swarm, capsys):
    figures, ready = [], []
    with steady_load(swarm.url) as load:
        for _ in range(3):
            swarm.wait_until(
                lambda: len(swarm.containers("torchserve")) == 2 and all(map(healthy, swarm.containers("torchserve"))),
                300,
                "two healthy TorchServe tasks",
            )
            victim, sent_before, lost_before = swarm.containers("torchserve")[0], len(load.answered), len(load.failures)
            killed = time.monotonic()
            run(["docker", "kill", victim])
            # Past the facades' next DNS lookup (every 5 s), with answers from the survivor.
            keep_loading_past(load, killed + 6)
            ready.append(requests.get(f"{swarm.url}/readyz", timeout=10).status_code)
            swarm.wait_until(lambda v=victim: v not in swarm.containers("torchserve"), 60, "the killed task gone")
            figures.append(
                (len(load.answered) - sent_before, len(load.failures) - lost_before, max(load.took[sent_before:]))
            )
        # The third replacement serves as well before the load stops.
        swarm.wait_until(lambda: len(swarm.containers("torchserve")) == 2, 120, "the last killed task replaced")
    with capsys.disabled():
        for number, (sent, lost, slowest) in enumerate(figures, 1):
            print(f"\n  TorchServe kill {number} of 3 (Swarm): {sent} requests, {lost} lost, slowest {slowest:.2f} s")

    assert load.failures == []
    assert len(figures) == 3
    assert ready == [200, 200, 200]


STORED_DEFAULT = (
    "from tools.build_mar import archived_build_info; "
    "print(archived_build_info('/home/model-server/model-store/sentiment.mar')['archive_version'])"
)


def served_versions(swarm):
    """Return, for each TorchServe container on this node, (its default version, every registered
    version) from its management API, and the version its store's sentiment.mar holds (what a
    restarted task loads)."""
    found = []
    for container in swarm.containers("torchserve"):
        lines = run(["docker", "exec", container, "python", "-m", "tools.model_upgrade", "status"]).stdout.splitlines()
        rows = [line.split() for line in lines if line.strip()]
        default = [row[1] for row in rows if row[2] == "default"]
        stored = run(["docker", "exec", container, "python", "-c", STORED_DEFAULT]).stdout.strip()
        found.append((default, sorted(row[1] for row in rows), stored))
    return found


def test_a_model_upgrade_and_a_rollback_under_load_lose_no_request_and_a_replaced_task_serves_the_switched_model(
    swarm, standin_model_dir, tmp_path_factory, capsys
):
    candidate_dir = tmp_path_factory.mktemp("swarm-candidate")
    candidate = build_archive(standin_model_dir, candidate_dir, RUNTIME="torch")
    candidate_dir.chmod(0o755)  # read by the container's user (10001)
    candidate.chmod(0o644)
    new = json.loads(zipfile.ZipFile(candidate).read(BUILD_INFO))["archive_version"]
    # The kill test's last replacement may still be loading.
    swarm.wait_until(
        lambda: len(swarm.containers("torchserve")) == 2 and all(map(healthy, swarm.containers("torchserve"))),
        300,
        "two healthy TorchServe tasks",
    )
    before = served_versions(swarm)
    old = before[0][2]
    assert before == [([old], [old], old)] * 2
    options = "UPGRADE_ARGS=--drain-s 5 --timeout 240"
    swarm.env["CANDIDATE_DIR"] = str(candidate_dir)
    try:
        with versioned_load(f"{swarm.url}/") as upgrade_load:
            upgraded = swarm.make(
                "swarm-model-upgrade", f"{options} --archive /candidate/{candidate.name}", timeout=900
            )
        after_upgrade = served_versions(swarm)
        # A task Swarm starts after the switch loads the store's sentiment.mar: the new version.
        victim = swarm.containers("torchserve")[0]
        run(["docker", "kill", victim])
        swarm.wait_until(
            lambda: (
                victim not in swarm.containers("torchserve")
                and len(swarm.containers("torchserve")) == 2
                and all(map(healthy, swarm.containers("torchserve")))
            ),
            300,
            "the killed TorchServe task replaced and healthy",
        )
        after_restart = served_versions(swarm)
        with versioned_load(f"{swarm.url}/") as rollback_load:
            rolled_back = swarm.make("swarm-model-rollback", options, timeout=900)
        after_rollback = served_versions(swarm)
    finally:
        del swarm.env["CANDIDATE_DIR"]

    with capsys.disabled():
        print(f"\n  Swarm upgrade: {upgrade_load.summary()}\n  Swarm rollback: {rollback_load.summary()}")
        print(upgraded.stdout + rolled_back.stdout)
    assert after_upgrade == [([new], [new], new)] * 2
    assert after_restart == [([new], [new], new)] * 2
    assert after_rollback == [([old], [old], old)] * 2
    for load in (upgrade_load, rollback_load):
        assert load.failures == []
        assert load.versions <= {old, new}


def test_swarm_down_leaves_nothing_of_the_stack(swarm):
    swarm.make("swarm-down")

    assert swarm.leftovers() == {}
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{swarm.url}/healthz", timeout=5)
