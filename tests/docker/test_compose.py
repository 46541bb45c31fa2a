"""The Compose deployment, for real: images, users, ports, networks, scaling, budgets, clean stop.

Runs against the private stack of conftest.py (unique project name, free 127.0.0.1 ports, the
trained stand-in model from ../shared, the local CPU torch wheel), shared with test_faults.py and
test_lockdown.py. Tests run in file order; the one that stops the stack runs after all the others.
"""

import time

import pytest
import requests

from tests.docker.conftest import BASE_IMAGES, IMAGES, NGINX_BASE, image_size, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MB = 1_000_000  # as `docker images` counts
FACADE_BUDGET_MB = 80
TORCHSERVE_BUDGET_MB = 1400
SEEDS = {"It is worth it": "POSITIVE", "It is a waste of time and money": "NEGATIVE"}


def container_ids_seen(stack, requests_count, path="/healthz"):
    """Return the X-Container-ID values of `requests_count` GETs through nginx (all must be 200)."""
    seen = set()
    for _ in range(requests_count):
        response = requests.get(f"{stack.url}{path}", timeout=5)
        assert response.status_code == 200, response.text
        seen.add(response.headers["X-Container-ID"])
    return seen


def short_ids(stack, service):
    """Return the 12-character IDs (= hostnames) of the service's running containers."""
    return {cid[:12] for cid in stack.container_ids(service)}


def listening_ports(container):
    """Return the TCP ports in LISTEN state (0A) from /proc/net/tcp and tcp6 inside a container."""
    out = run(["docker", "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6"], check=False).stdout
    ports = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def tcp_connects(container, host, port):
    """Return whether bash in `container` can open a TCP connection to host:port within 3 s."""
    result = run(
        ["docker", "exec", container, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"], check=False
    )
    return result.returncode == 0


def test_images_fit_their_size_budgets(stack, capsys):
    sizes = {image: image_size(image) for image in IMAGES}
    bases = {image: image_size(base) for image, base in {**BASE_IMAGES, "sentiment-nginx": NGINX_BASE}.items()}
    with capsys.disabled():
        print("\n  image sizes (added over the base image):")
        for image in IMAGES:
            print(f"    {image:<22} {sizes[image] / MB:7.0f} MB  (+{(sizes[image] - bases[image]) / MB:.0f} MB)")
        m = stack.measurements
        print(
            f"  build {m['build_s']:.0f} s; up --build --scale app=3 to all healthy {m['up_build_s']:.1f} s\n"
            f"  cold up (images built, fresh volumes): /readyz 200 after {m['cold_up_s']:.1f} s, "
            f"all healthy after {m['cold_up_healthy_s']:.1f} s"
        )
    assert sizes["sentiment-facade"] - bases["sentiment-facade"] <= FACADE_BUDGET_MB * MB
    assert sizes["sentiment-torchserve"] - bases["sentiment-torchserve"] <= TORCHSERVE_BUDGET_MB * MB


def test_every_service_is_healthy_and_the_model_job_succeeded(stack):
    for service in ("torchserve", "app", "nginx"):
        for cid in stack.container_ids(service):
            assert stack.inspect(cid)["State"]["Health"]["Status"] == "healthy", service
    # -a: Compose v2 lists only running containers without it (1.29 listed all)
    (model,) = stack.compose_run("ps", "-a", "-q", "model").stdout.split()
    state = stack.inspect(model)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)


def test_three_replicas_answer_through_nginx(stack):
    replicas = short_ids(stack, "app")
    assert len(replicas) == 3
    assert container_ids_seen(stack, 30) == replicas


@pytest.mark.parametrize(("text", "label"), SEEDS.items())
def test_seed_sentences_get_the_right_label(stack, text, label):
    response = requests.post(f"{stack.url}/", json={"text": text}, timeout=15)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == label
    assert body["container_id"] in short_ids(stack, "app")


def test_a_batch_and_an_unknown_path_keep_the_json_contract(stack):
    response = requests.post(f"{stack.url}/", json={"texts": list(SEEDS)}, timeout=15)
    assert [result["label"] for result in response.json()["results"]] == list(SEEDS.values())
    too_big = b'{"text": "' + b"a" * (1024 * 1024) + b'"}'
    response = requests.post(stack.url, data=too_big, headers={"Content-Type": "application/json"}, timeout=30)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")
    # TorchServe's own paths are not reachable through nginx.
    for path in ("/predictions/sentiment", "/models", "/metrics"):
        response = requests.get(f"{stack.url}{path}", timeout=5)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_no_process_runs_as_root_and_every_socket_listens_on_an_unprivileged_port(stack):
    checked = 0
    for service in ("torchserve", "app", "nginx"):
        for cid in stack.container_ids(service):
            uid = run(["docker", "exec", cid, "id", "-u"]).stdout.strip()
            assert uid != "0", f"{service} {cid[:12]} runs as root"
            info = stack.inspect(cid)
            assert info["Config"]["User"].split(":")[0] == "10001"
            assert info["HostConfig"]["CapDrop"] in (["ALL"], ["all"])
            assert info["HostConfig"]["ReadonlyRootfs"] is True
            ports = listening_ports(cid)
            assert ports, f"{service} {cid[:12]}: no listening socket found"
            assert min(ports) >= 1024, f"{service} {cid[:12]} listens on {sorted(ports)}"
            checked += 1
    assert checked == 5  # torchserve, 3 facades, nginx


def test_nginx_cannot_reach_torchserve_by_name_or_backend_ip(stack):
    (nginx,) = stack.container_ids("nginx")
    (torchserve,) = stack.container_ids("torchserve")
    networks = stack.inspect(torchserve)["NetworkSettings"]["Networks"]
    assert list(networks) == [f"{stack.project}_backend"]
    backend_ip = networks[f"{stack.project}_backend"]["IPAddress"]
    app = stack.container_ids("app")[0]
    # The probe works: a facade (on both networks) reaches TorchServe by name and by IP.
    assert tcp_connects(app, "torchserve", 8090)
    assert tcp_connects(app, backend_ip, 8090)
    for port in (8090, 8091, 8092):
        assert not tcp_connects(nginx, "torchserve", port)
        assert not tcp_connects(nginx, backend_ip, port)


def test_torchserve_workers_scale_with_make_docker_scale_workers(stack):
    for workers in (2, 1):
        result = run(
            [
                "make",
                "--no-print-directory",
                "docker-scale-workers",
                f"N={workers}",
                f"COMPOSE={' '.join(stack.compose)} -p {stack.project}",
            ],
            timeout=300,
            check=False,
            env=stack.env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("READY") == workers
    response = requests.post(f"{stack.url}/", json={"text": "It is worth it"}, timeout=15)
    assert response.json()["label"] == "POSITIVE"


def test_replicas_added_and_removed_with_nginx_running_are_seen_within_30_s(stack):
    (nginx,) = stack.container_ids("nginx")
    started_at = stack.inspect(nginx)["State"]["StartedAt"]

    stack.compose_run("up", "-d", "--scale", "app=5")
    replicas = short_ids(stack, "app")
    assert len(replicas) == 5
    seen, deadline = set(), time.monotonic() + 30
    while seen != replicas and time.monotonic() < deadline:
        seen |= container_ids_seen(stack, 10)
        time.sleep(0.2)
    assert seen == replicas

    stack.compose_run("up", "-d", "--scale", "app=2")
    remaining = short_ids(stack, "app")
    assert len(remaining) == 2
    # Removed replicas get no more traffic, and no request fails meanwhile.
    assert container_ids_seen(stack, 30) <= remaining

    assert stack.container_ids("nginx") == [nginx]
    assert stack.inspect(nginx)["State"]["StartedAt"] == started_at


@pytest.mark.stops_stack
def test_stopping_is_prompt_and_clean(stack):
    """SIGTERM reaches every server (tini -g for TorchServe), and each exits 0 well inside its grace period."""
    services = ("nginx", "app", "torchserve")
    containers = {service: stack.container_ids(service) for service in services}
    start = time.monotonic()
    stack.compose_run("stop", "--timeout", "30")
    elapsed = time.monotonic() - start
    assert elapsed < 25, f"stopping took {elapsed:.1f} s"
    for service, ids in containers.items():
        for cid in ids:
            state = stack.inspect(cid)["State"]
            assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False), service
