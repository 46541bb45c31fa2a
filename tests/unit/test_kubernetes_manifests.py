"""Offline checks of the cluster files: Kubernetes manifests, the Swarm stack, and their agreement.

- every kustomization (base and overlays) renders with `kubectl kustomize` and validates against
  the Kubernetes 1.32 schemas (kubernetes-validate, strict; a warning fails too);
- checkov finds no failed check, and every check it skips carries a written reason;
- docker-compose.yml, deploy/swarm/stack.yml and the Kubernetes base agree with the Dockerfile on
  image names, ports, user IDs, probes and limits; the Swarm stack keeps Compose's hardening.

The Swarm stack is deployed for real by tests/docker/test_swarm.py; nothing here needs a cluster.
"""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

import test_app
from tests.conftest import PROJECT_DIR
from tests.unit.test_docker_files import COMPOSE_FILE, dockerfile_stages, env_defaults

KUBERNETES_DIR = PROJECT_DIR / "deploy" / "kubernetes"
KUSTOMIZATIONS = sorted(path.parent for path in KUBERNETES_DIR.rglob("kustomization.yaml"))
STACK_FILE = PROJECT_DIR / "deploy" / "swarm" / "stack.yml"
MODEL_DOCKERFILE = PROJECT_DIR / "deploy" / "model-image" / "Dockerfile"
# `make install` puts checkov into a venv of its own inside the project's: its pins (packaging<24)
# conflict with pytest's.
CHECKOV = Path(sys.prefix) / "checkov" / "bin" / "checkov"
# Compose service -> (Dockerfile stage, Kubernetes Deployment, Kubernetes container).
SERVICES = {"torchserve": ("torchserve", "torchserve", "torchserve"), "app": ("facade", "app", "facade")}
SERVICES["nginx"] = ("nginx", "nginx", "nginx")
STACK_VARIABLES = set(re.findall(r"\$\{([A-Z_]+):-", STACK_FILE.read_text()))
DEFAULT = re.compile(r"^\$\{[A-Z_]+:-([^}]*)\}$")
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


@functools.cache
def kustomize(directory):
    """Return `kubectl kustomize directory` as text, or skip when kubectl is absent."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (1.32 or newer) for `kubectl kustomize`")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(directory):
    """Return the rendered resources of a kustomization as dicts."""
    return [doc for doc in yaml.safe_load_all(kustomize(directory)) if doc]


def resource(docs, kind, name):
    """Return the one resource of this kind and name."""
    [found] = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def container(docs, deployment, name):
    """Return a container of a Deployment's pod template."""
    [found] = [
        c
        for c in resource(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        if c["name"] == name
    ]
    return found


def env_default(value):
    """Return the default of a `${NAME:-default}` value, or the value itself."""
    match = DEFAULT.match(str(value))
    return match.group(1) if match else value


def to_bytes(size):
    """Return a Docker (256m, 3g) or Kubernetes (256Mi, 3Gi) memory size in bytes."""
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", str(size)).groups()
    return int(number) * UNITS[unit.lower()]


def stage_instruction(stage, name):
    """Return the arguments of the last `name` instruction of a Dockerfile stage."""
    return [arguments for instruction, arguments in dockerfile_stages()[stage] if instruction == name][-1]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda path: str(path.relative_to(KUBERNETES_DIR)))
def test_every_kustomization_validates_against_the_kubernetes_1_32_schemas(directory):
    rendered = kustomize(directory)
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.32.0", "-"],
        input=rendered,
        capture_output=True,
        text=True,
        check=False,
    )

    problems = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if not line.startswith("INFO")]
    assert result.returncode == 0 and problems == [], "\n".join(problems)
    assert result.stdout.count("passed for resource") == rendered.count("\nkind: ") + rendered.startswith("kind: ")


def test_the_overlays_are_the_base_plus_workers_and_a_gpu():
    assert [path.relative_to(KUBERNETES_DIR).as_posix() for path in KUSTOMIZATIONS] == [
        "base",
        "overlays/api-keys",
        "overlays/gpu",
        "overlays/model-store",
        "overlays/workers",
    ]
    gpu = container(documents(KUBERNETES_DIR / "overlays" / "gpu"), "torchserve", "torchserve")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"].endswith(":cuda")
    workers = container(documents(KUBERNETES_DIR / "overlays" / "workers"), "torchserve", "torchserve")
    assert "python -m tools.scale_workers 2" in " ".join(workers["lifecycle"]["postStart"]["exec"]["command"])


def test_the_model_store_overlay_shares_one_claim_read_only_in_torchserve_and_writable_only_in_the_idle_tools_pod():
    docs = documents(KUBERNETES_DIR / "overlays" / "model-store")
    claim = resource(docs, "PersistentVolumeClaim", "model-store")
    torchserve = resource(docs, "Deployment", "torchserve")["spec"]["template"]["spec"]
    tools = resource(docs, "Deployment", "model-store-tools")
    store = env_defaults("torchserve")["MODEL_STORE"]

    # Every TorchServe pod, on whichever node, reads the one store the switch writes.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert {"name": "model-store", "persistentVolumeClaim": {"claimName": "model-store"}} in torchserve["volumes"]
    [served] = [m for m in container(docs, "torchserve", "torchserve")["volumeMounts"] if m["name"] == "model-store"]
    assert served == {"name": "model-store", "mountPath": store, "readOnly": True}
    # An empty claim is seeded from the image's archive before TorchServe starts.
    [seed] = torchserve["initContainers"]
    assert seed["image"] == container(docs, "torchserve", "torchserve")["image"]
    assert f"{store}/sentiment.mar" in " ".join(seed["command"])
    # The writer runs only during a switch (model-upgrade.sh scales it), locked down like the rest.
    assert tools["spec"]["replicas"] == 0
    [writer] = [m for m in container(docs, "model-store-tools", "tools")["volumeMounts"] if m["name"] == "model-store"]
    assert writer == {"name": "model-store", "mountPath": store}
    assert container(docs, "model-store-tools", "tools")["securityContext"]["readOnlyRootFilesystem"] is True


def gpu_model_image_commands():
    """Return the commands `make gpu-model-image` runs, one a line (a dry run: nothing is built)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "-n", "-o", "install", "gpu-model-image"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.replace("\\\n", " ").splitlines()


def test_the_gpu_overlay_runs_the_image_make_builds_from_a_torch_archive_never_an_onnx_one():
    image = container(documents(KUBERNETES_DIR / "overlays" / "gpu"), "torchserve", "torchserve")["image"]
    commands = gpu_model_image_commands()
    [build_archive] = [command.split() for command in commands if "tools.build_mar" in command]
    [build_image] = [command.split() for command in commands if "deploy/model-image/build.sh" in command]
    # The ONNX archive runs on the CPU only: the GPU image gets a torch archive of its own.
    assert "RUNTIME=torch" in build_archive
    [store] = [word.removeprefix("MODEL_STORE=") for word in build_archive if word.startswith("MODEL_STORE=")]
    assert store != "model-store"
    assert f"MODEL_IMAGE={image}" in build_image
    assert "REQUIRE_RUNTIME=torch" in build_image
    assert build_image[-1] == f"{store}/sentiment.mar"


def test_the_model_image_build_refuses_an_onnx_archive_for_the_gpu_image(tiny_model_dir, tmp_path):
    from tools.build_mar import BuildSettings, build

    archive = build(
        BuildSettings.from_env({"MODEL_DIR": str(tiny_model_dir), "MODEL_STORE": str(tmp_path), "PRECISION": "fp32"})
    )
    result = subprocess.run(
        ["bash", str(PROJECT_DIR / "deploy" / "model-image" / "build.sh"), str(archive)],
        env={
            **os.environ,
            "REQUIRE_RUNTIME": "torch",
            "MODEL_IMAGE": "sentiment-torchserve-model:cuda",
            # Never reached: the archive is refused before any image is looked at.
            "TORCHSERVE_IMAGE": "no-such-image-in-this-test",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "was built with RUNTIME=onnx and sentiment-torchserve-model:cuda needs RUNTIME=torch" in result.stderr
    assert "make gpu-model-image" in result.stderr


def test_checkov_fails_no_check_and_every_skipped_check_says_why(tmp_path):
    if not CHECKOV.exists():
        pytest.skip(f"needs checkov at {CHECKOV} (`make install` puts it there)")
    # Every kustomization in one run (checkov's start-up is most of its time).
    files = []
    for directory in KUSTOMIZATIONS:
        manifest = tmp_path / f"{directory.name}.yaml"
        manifest.write_text(kustomize(directory))
        files += ["-f", str(manifest)]
    result = subprocess.run(
        [str(CHECKOV), "--compact", "--framework", "kubernetes", "-o", "json", *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(result.stdout)
    results = report["results"]

    failed = [f"{check['check_id']} {check['resource']}" for check in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100 * len(KUSTOMIZATIONS)
    unexplained = [
        check["check_id"]
        for check in results["skipped_checks"]
        if len(check["check_result"].get("suppress_comment", "")) < 20
    ]
    assert unexplained == []


def test_every_pod_runs_as_the_images_non_root_user_locked_down():
    docs = documents(KUBERNETES_DIR / "base")
    for _, deployment, name in SERVICES.values():
        pod = resource(docs, "Deployment", deployment)["spec"]["template"]["spec"]
        security = container(docs, deployment, name)["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert security == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert all("emptyDir" in volume or "configMap" in volume for volume in pod.get("volumes", []))


def test_torchserve_is_reached_only_by_the_facades_and_its_services_are_cluster_internal():
    docs = documents(KUBERNETES_DIR / "base")
    services = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "Service"}
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "NetworkPolicy"}

    assert {name: spec["type"] for name, spec in services.items()} == dict.fromkeys(services, "ClusterIP")
    assert [port["port"] for port in services["torchserve"]["ports"]] == [8090]
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    [torchserve_from] = policies["torchserve"]["ingress"]
    assert torchserve_from["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "facade"}}}]
    assert policies["torchserve"]["egress"] == []
    nginx_to = [rule["to"] for rule in policies["nginx"]["egress"]]
    assert nginx_to == [[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "facade"}}}]]


def test_the_torchserve_services_are_headless_so_a_facade_resolves_every_pod():
    services = {
        doc["metadata"]["name"]: doc["spec"] for doc in documents(KUBERNETES_DIR / "base") if doc["kind"] == "Service"
    }

    assert services["torchserve"]["clusterIP"] == "None"


def test_no_manifest_opens_a_path_to_the_management_api():
    docs = documents(KUBERNETES_DIR / "base")
    torchserve = container(docs, "torchserve", "torchserve")
    service_ports = {port["port"] for doc in docs if doc["kind"] == "Service" for port in doc["spec"]["ports"]}
    policy_ports = {
        port["port"]
        for doc in docs
        if doc["kind"] == "NetworkPolicy"
        for rule in doc["spec"].get("ingress", []) + doc["spec"].get("egress", [])
        for port in rule.get("ports", [])
    }
    # The image's management API is a Unix socket inside the container: no port to name anywhere.
    assert env_defaults("torchserve")["TS_MANAGEMENT_ADDRESS"].startswith("unix:")
    assert {port["containerPort"] for port in torchserve["ports"]} == {8090, 8092}
    assert 8091 not in service_ports | policy_ports
    assert not any("MANAGEMENT" in env["name"] for env in container(docs, "app", "facade")["env"])


def test_a_labelled_prometheus_may_scrape_only_the_facades_and_torchserves_metrics_ports():
    policies = [doc["spec"] for doc in documents(KUBERNETES_DIR / "base") if doc["kind"] == "NetworkPolicy"]
    prometheus = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    scraped = {
        (policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
        for policy in policies
        for rule in policy.get("ingress", [])
        if prometheus in rule.get("from", [])
        for port in rule["ports"]
    }

    assert scraped == {("facade", 5000), ("torchserve", 8092)}


# --------------------------------------------------------------------- Compose, Swarm, Kubernetes


def test_compose_swarm_and_kubernetes_run_the_same_images():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    swarm = yaml.safe_load(STACK_FILE.read_text())["services"]
    docs = documents(KUBERNETES_DIR / "base")
    model_base = re.search(r"^ARG TORCHSERVE_IMAGE=(\S+)$", MODEL_DOCKERFILE.read_text(), re.MULTILINE).group(1)

    # TorchServe runs the image with the model in it, built FROM Compose's TorchServe image.
    assert model_base == compose["torchserve"]["image"]
    assert env_default(swarm["torchserve"]["image"]) == "sentiment-torchserve-model"
    assert container(docs, "torchserve", "torchserve")["image"] == "sentiment-torchserve-model"
    for service in ("app", "nginx"):
        _, deployment, name = SERVICES[service]
        assert swarm[service]["image"] == compose[service]["image"]
        assert container(docs, deployment, name)["image"] == compose[service]["image"]


def test_compose_swarm_and_kubernetes_agree_on_user_ids_and_ports():
    swarm = yaml.safe_load(STACK_FILE.read_text())["services"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    docs = documents(KUBERNETES_DIR / "base")
    for stage, deployment, name in SERVICES.values():
        uid, gid = (int(part) for part in stage_instruction(stage, "USER").split(":"))
        pod = resource(docs, "Deployment", deployment)["spec"]["template"]["spec"]
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
        exposed = {int(port) for port in stage_instruction(stage, "EXPOSE").split()}
        assert {port["containerPort"] for port in container(docs, deployment, name)["ports"]} <= exposed

    nginx_port = int(env_defaults("nginx")["NGINX_LISTEN"])
    assert [port["target"] for port in swarm["nginx"]["ports"]] == [nginx_port]
    assert compose["nginx"]["ports"][0].endswith(f":{nginx_port}")
    facade_port = int(env_defaults("facade")["FACADE_PORT"])
    assert f"server app:{facade_port}" in (KUBERNETES_DIR / "base" / "nginx-topology.conf").read_text()
    assert f"http://app:{facade_port}" in (PROJECT_DIR / "nginx" / "topology.docker.conf").read_text()
    facade_env = {e["name"]: e["value"] for e in container(docs, "app", "facade")["env"]}
    torchserve = env_defaults("torchserve")
    # The facade image's default reaches TorchServe's inference port through the `torchserve`
    # name that Compose, Swarm and Kubernetes all give it; none of them restates it.
    image_url = env_defaults("facade")["FACADE_TORCHSERVE_URL"]
    assert image_url == "http://torchserve:" + torchserve["TS_INFERENCE_ADDRESS"].rsplit(":", 1)[1]
    inference_service = resource(docs, "Service", "torchserve")
    assert [port["port"] for port in inference_service["spec"]["ports"]] == [int(image_url.rsplit(":", 1)[1])]
    assert "FACADE_TORCHSERVE_URL" not in facade_env
    assert "FACADE_TORCHSERVE_URL" not in compose["app"]["environment"]
    assert "FACADE_TORCHSERVE_URL" not in (swarm["app"].get("environment") or {})


def test_probes_are_the_images_healthchecks_and_the_facades_health_routes():
    docs = documents(KUBERNETES_DIR / "base")
    torchserve = container(docs, "torchserve", "torchserve")
    healthcheck = json.loads(stage_instruction("torchserve", "HEALTHCHECK").split(" CMD ", 1)[1])
    facade = container(docs, "app", "facade")
    nginx = container(docs, "nginx", "nginx")

    assert torchserve["readinessProbe"]["exec"]["command"] == healthcheck
    assert torchserve["startupProbe"]["exec"]["command"] == healthcheck
    # The startup probe allows at least the image's HEALTHCHECK start period.
    start_period = int(re.search(r"--start-period=(\d+)s", stage_instruction("torchserve", "HEALTHCHECK")).group(1))
    startup = torchserve["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= start_period
    assert (facade["readinessProbe"]["httpGet"]["path"], facade["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )
    assert "/healthz" in stage_instruction("facade", "HEALTHCHECK")
    assert nginx["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "GET /healthz" in stage_instruction("nginx", "HEALTHCHECK")
    routes = (PROJECT_DIR / "facade" / "routes.py").read_text()
    assert '@bp.get("/readyz")' in routes and '@bp.get("/healthz")' in routes


def test_compose_swarm_and_kubernetes_share_the_memory_and_process_limits():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    swarm = yaml.safe_load(STACK_FILE.read_text())["services"]
    docs = documents(KUBERNETES_DIR / "base")
    for service, (_, deployment, name) in SERVICES.items():
        limits = swarm[service]["deploy"]["resources"]["limits"]
        compose_memory = to_bytes(env_default(compose[service]["mem_limit"]))
        assert limits["memory"] == compose[service]["mem_limit"], "same variable, same default"
        assert limits["pids"] == compose[service]["pids_limit"]
        assert to_bytes(container(docs, deployment, name)["resources"]["limits"]["memory"]) == compose_memory


def test_the_swarm_stack_keeps_composes_hardening_in_forms_swarm_honours():
    stack = yaml.safe_load(STACK_FILE.read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]

    assert re.fullmatch(r"3\.\d+", stack["version"])
    assert {name: net.get("driver") for name, net in stack["networks"].items()} == {
        "frontend": "overlay",
        "backend": "overlay",
    }
    # TorchServe has no route out, on either engine.
    assert stack["networks"]["backend"]["internal"] is True
    assert yaml.safe_load(COMPOSE_FILE.read_text())["networks"]["backend"]["internal"] is True
    for name, service in stack["services"].items():
        # Keys `docker stack deploy` (CLI 20.10) rejects or silently drops.
        assert not {"mem_limit", "pids_limit", "tmpfs", "depends_on", "restart", "build", "security_opt"} & set(service)
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["networks"] == compose[name]["networks"], name
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        assert service["deploy"]["restart_policy"]["condition"] == "any", name
        compose_mounts = {mount.split(":")[0] for mount in compose[name]["tmpfs"]}
        assert {mount["target"] for mount in service["volumes"] if mount["type"] == "tmpfs"} == compose_mounts
        assert service["stop_grace_period"] == compose[name]["stop_grace_period"], name
    assert stack["services"]["app"]["deploy"]["update_config"]["order"] == "start-first"
    # Only nginx is published, in host mode; never TorchServe's management port.
    published = {name: service.get("ports") for name, service in stack["services"].items() if service.get("ports")}
    assert list(published) == ["nginx"]
    assert [port["mode"] for port in published["nginx"]] == ["host"]


def compose_store_target(compose):
    """Return where Compose mounts the model store in TorchServe."""
    [mount] = [m for m in compose["torchserve"]["volumes"] if m.startswith("model-store:")]
    return mount.split(":")[1]


def test_swarm_torchserve_reads_its_model_store_from_the_stacks_volume_where_compose_mounts_it():
    stack = yaml.safe_load(STACK_FILE.read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    volumes = [mount for mount in stack["services"]["torchserve"]["volumes"] if mount["type"] == "volume"]

    # Read-only in the model server: only the upgrade's one-shot container writes it (swarm.sh).
    assert volumes == [
        {"type": "volume", "source": "model-store", "target": compose_store_target(compose), "read_only": True}
    ]
    # A named volume of the stack, local to each node: Docker seeds it from the image's store.
    assert stack["volumes"] == {"model-store": None}


def run_help(docker):
    """Return `docker stack config --help`'s output (empty when the command does not exist)."""
    result = subprocess.run([docker, "stack", "config", "--help"], capture_output=True, text=True, check=False)
    return result.stdout


def test_the_swarm_stack_file_parses_as_docker_stack_deploy_reads_it():
    # `docker stack config` (CLI >= 20.10) merges and interpolates the file exactly as deploy does.
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("needs the docker CLI for `docker stack config`")
    # The file's own defaults, whatever this shell exports.
    env = {name: value for name, value in os.environ.items() if name not in STACK_VARIABLES}
    result = subprocess.run(
        [docker, "stack", "config", "-c", str(STACK_FILE)], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0 and "Outputs the final config" not in run_help(docker):
        pytest.skip("this docker CLI (older than 23) has no `docker stack config`")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    # Where the client looks by default, as every deployment publishes nginx.
    assert config["services"]["nginx"]["ports"][0]["published"] == urllib.parse.urlsplit(test_app.DEFAULT_URL).port


def test_the_api_keys_overlay_points_the_facade_at_the_mounted_secret():
    facade = container(documents(KUBERNETES_DIR / "overlays" / "api-keys"), "app", "facade")
    keys_file = next(item["value"] for item in facade["env"] if item["name"] == "FACADE_API_KEYS_FILE")
    mount = next(item for item in facade["volumeMounts"] if item["name"] == "api-keys")
    assert keys_file.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in facade["volumeMounts"]  # the base's mounts are kept
