"""Lock-down of the running deployment, checked on the containers themselves.

Every container of the project (the one-shot model job too) from `docker inspect`; what is
published and where; TorchServe's APIs neither behind nginx nor open for registering code; the
archive being served; no secrets or host CA paths in the project's image layers or environment;
request text in no log. Runs against the shared stack of conftest.py.
"""

import json
import re
import time
import uuid
from urllib.parse import quote

import pytest
import requests

from tests.docker.conftest import BASE_IMAGES, IMAGES, NGINX_BASE, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERVICES = {"model", "torchserve", "app", "nginx"}
MODEL_STORE = "/home/model-server/model-store"
# Names of variables that would hold a secret, and assignments of them in a build step.
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL", re.IGNORECASE)
SECRET_ASSIGNMENT = re.compile(r"\b[A-Za-z0-9_]*(KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL)[A-Za-z0-9_]*=\S", re.I)
# Variables that point TLS clients at a CA bundle: only the stand-in base images may set them.
CA_VARIABLES = {"PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE"}
CA_VARIABLES |= {"NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"}
CA_FILE = re.compile(r"\S+\.(crt|pem)\b")
STANDARD_CA_FILES = {"/etc/ssl/certs/ca-certificates.crt"}
# TorchServe's own routes (inference, management, metrics), none of which nginx may serve.
TORCHSERVE_PATHS = ("/predictions/sentiment", "/models", "/models/sentiment", "/metrics", "/ping", "/api-description")


def tmpfs_size(options):
    """Return the size= of tmpfs mount options in bytes, or None."""
    match = re.search(r"(?:^|,)size=(\d+)([kmg]?)(?:,|$)", options)
    if not match:
        return None
    return int(match.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[match.group(2)]


def project_containers(stack):
    """Return {container ID: service} for every container of the project, running or exited."""
    return {cid: stack.service_of(cid) for cid in stack.labelled("container")}


def image_env(image):
    """Return an image's environment as {name: value}."""
    env = json.loads(run(["docker", "image", "inspect", "-f", "{{json .Config.Env}}", image]).stdout) or []
    return dict(entry.split("=", 1) for entry in env)


def history(image):
    """Return an image's history, newest first, as (created, created_by) pairs."""
    out = run(["docker", "history", "--no-trunc", "--human=false", "--format", "{{json .}}", image]).stdout
    return [(entry["CreatedAt"], entry["CreatedBy"]) for entry in map(json.loads, out.splitlines())]


def project_layers(image, base):
    """Return the build steps the project's Dockerfile added on top of `base` (newest first)."""
    ours, theirs = history(image), history(base)
    assert ours[len(ours) - len(theirs) :] == theirs, f"{image} is not built on {base}"
    return [created_by for _, created_by in ours[: len(ours) - len(theirs)]]


def test_every_container_runs_locked_down(stack):
    containers = project_containers(stack)
    assert set(containers.values()) == SERVICES
    for cid, service in containers.items():
        info = stack.inspect(cid)
        where = f"{service} {cid[:12]}"
        user = info["Config"]["User"]
        assert user and user.split(":")[0] not in ("0", "root"), f"{where} runs as {user!r}"
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True, where
        assert [cap.upper() for cap in host["CapDrop"] or []] == ["ALL"], where
        assert not host["CapAdd"], where
        assert host["Privileged"] is False, where
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), where
        assert host["Memory"] > 0, f"{where} has no memory limit"
        assert (host["PidsLimit"] or 0) > 0, f"{where} has no pids limit"
        # Whatever is writable is a size-capped tmpfs (counted in the memory limit) or a volume.
        tmpfs = host["Tmpfs"] or {}
        assert tmpfs, f"{where} has no tmpfs: then it could not write at all"
        for path, options in tmpfs.items():
            size = tmpfs_size(options)
            assert size, f"{where}: tmpfs {path} has no size cap ({options!r})"
            assert size < host["Memory"], f"{where}: tmpfs {path} ({options}) is not below the memory limit"


def test_only_nginx_is_published_and_only_on_loopback(stack):
    published = {}
    for cid, service in project_containers(stack).items():
        for port, bindings in (stack.inspect(cid)["HostConfig"]["PortBindings"] or {}).items():
            published.setdefault((service, port), set()).update((b["HostIp"], b["HostPort"]) for b in bindings)
    assert published == {("nginx", "8080/tcp"): {("127.0.0.1", str(stack.http_port))}}


@pytest.mark.parametrize("path", TORCHSERVE_PATHS)
def test_torchserve_routes_are_json_404_through_nginx(stack, path):
    for method in ("GET", "POST"):
        response = requests.request(method, f"{stack.url}{path}", json={"text": "It is worth it"}, timeout=5)
        assert response.status_code == 404, f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("registration", "refusal"),
    [
        ("http://127.0.0.1:9/foreign.mar", "does not match any allowed URL"),
        ("file:///tmp/foreign.mar", "does not match any allowed URL"),
        (f"file://{MODEL_STORE}/sentiment.mar", "does not match any allowed URL"),
        ("../../../tmp/foreign.mar", "Relative path is not allowed"),
        ("foreign.mar", "not found"),
    ],
)
def test_the_management_api_registers_only_archives_already_in_the_read_only_store(stack, registration, refusal):
    # Registering is on (enable_model_api, for tools.model_upgrade), but only by the file name of an
    # archive in the store: allowed_urls matches no URL, so nothing is fetched or copied in.
    status, body = stack.management("POST", f"/models?url={quote(registration, safe='')}")
    assert status == 404, body
    assert refusal.lower() in json.loads(body)["message"].lower()


def test_the_workflow_api_loads_nothing_and_only_store_archives_are_registered(stack):
    # The workflow API has no switch of its own in 0.12; allowed_urls refuses its archives too.
    for archive in ("http://127.0.0.1:9/foreign.war", "file:///tmp/foreign.war", "https://127.0.0.1:9/foreign.mar"):
        status, body = stack.management("POST", f"/workflows?url={quote(archive, safe='')}")
        assert 400 <= status < 500, f"{archive}: {status} {body}"
    assert json.loads(stack.management("GET", "/workflows")[1]) == {"workflows": []}
    status, body = stack.management("GET", "/models")
    assert status == 200
    models = json.loads(body)["models"]
    assert all(re.fullmatch(r"sentiment(-[0-9a-f]{12})?\.mar", model["modelUrl"]) for model in models), body


# Run in a facade container: each (method, URL) once; its status, or the kind of failure.
FACADE_PROBE = """
import json, sys, requests
answers = {}
for method, url in json.loads(sys.argv[1]):
    try:
        answers[method + " " + url] = requests.request(method, url, timeout=5).status_code
    except requests.RequestException as exc:
        answers[method + " " + url] = type(exc).__name__
print(json.dumps(answers))
"""
MANAGEMENT_CALLS = [
    ("GET", "/models"),
    ("GET", "/models/sentiment"),
    ("PUT", "/models/sentiment?min_worker=0&max_worker=0&synchronous=true"),
    ("POST", "/models?url=sentiment.mar"),
    ("DELETE", "/models/sentiment"),
    ("GET", "/workflows"),
]
# Listening sockets of /proc/net/tcp{,6} as "address:port" in hex, state 0A (LISTEN).
LISTEN_TABLE = "cat /proc/net/tcp /proc/net/tcp6"


def listening(torchserve):
    """Return {(address hex, port)} of the TCP sockets listening in a container."""
    lines = run(["docker", "exec", torchserve, "sh", "-c", LISTEN_TABLE]).stdout.splitlines()
    fields = [line.split() for line in lines if line.split() and line.split()[0].endswith(":")]
    return {(f[1].rsplit(":", 1)[0], int(f[1].rsplit(":", 1)[1], 16)) for f in fields if f[3] == "0A"}


def is_loopback(address):
    """Return whether a /proc/net/tcp{,6} address (hex, in the kernel's byte order) is on loopback:
    127.0.0.0/8 (gRPC on 127.0.0.1, Docker's DNS on 127.0.0.11), ::1 or ::ffff:127.x."""
    if len(address) == 8:
        return address.endswith("7F")
    return address == "00000000000000000000000001000000" or (
        address.startswith("0000000000000000FFFF0000") and address.endswith("7F")
    )


def test_the_facade_reaches_no_management_endpoint_of_torchserve(stack):
    (torchserve,) = stack.container_ids("torchserve")
    app = stack.container_ids("app")[0]
    calls = [
        (method, f"http://torchserve:{port}{path}") for port in (8090, 8091, 8092) for method, path in MANAGEMENT_CALLS
    ]
    answers = json.loads(run(["docker", "exec", app, "python", "-c", FACADE_PROBE, json.dumps(calls)]).stdout)

    # No port: nothing listens where the management API used to.
    assert {answer for key, answer in answers.items() if ":8091/" in key} == {"ConnectionError"}
    # The inference and metrics ports know no management route (and the facade reached them: numbers).
    others = {key: answer for key, answer in answers.items() if ":8091/" not in key}
    assert all(isinstance(answer, int) and 400 <= answer < 500 for answer in others.values()), others
    # TorchServe listens beyond its loopback only on inference and metrics (gRPC: its loopback).
    assert {port for address, port in listening(torchserve) if not is_loopback(address)} == {8090, 8092}
    # The socket's folder: TorchServe's user alone may enter.
    folder = run(["docker", "exec", torchserve, "stat", "-c", "%a %u", "/home/model-server/tmp/management"]).stdout
    assert folder.split() == ["700", "10001"]
    # Operators' exec reaches it, and the scale call from the facade changed nothing.
    status, body = stack.management("GET", "/models/sentiment")
    assert status == 200
    statuses = [worker["status"] for worker in json.loads(body)[0]["workers"]]
    assert statuses and set(statuses) == {"READY"}


def test_torchserve_serves_the_archive_the_project_built_from_a_read_only_store(stack):
    (torchserve,) = stack.container_ids("torchserve")
    (store,) = [m for m in stack.inspect(torchserve)["Mounts"] if m["Destination"] == MODEL_STORE]
    assert (store["Type"], store["RW"]) == ("volume", False)
    # Inside the container: the archive's manifest, build info and Python files, and the
    # handler the image carries (what the model job built the archive from).
    probe = (
        "import hashlib, json, os, pathlib, zipfile\n"
        f"store = pathlib.Path('{MODEL_STORE}')\n"
        "mar = zipfile.ZipFile(store / 'sentiment.mar')\n"
        "digest = lambda data: hashlib.sha256(data).hexdigest()\n"
        "print(json.dumps({\n"
        "    'store': sorted(os.listdir(store)),\n"
        "    'manifest': json.loads(mar.read('MAR-INF/MANIFEST.json')),\n"
        "    'build_info': json.loads(mar.read('build-info.json')),\n"
        "    'archived': {n: digest(mar.read(n)) for n in mar.namelist() if n.endswith('.py')},\n"
        "    'image': {p.name: digest(p.read_bytes()) for p in pathlib.Path('/opt/sentiment/handler').glob('*.py')},\n"
        "}))\n"
    )
    found = json.loads(run(["docker", "exec", torchserve, "python", "-c", probe]).stdout)
    assert found["store"] == ["sentiment.mar"]
    assert found["manifest"]["model"]["modelName"] == "sentiment"
    assert found["manifest"]["model"]["handler"] == "sentiment_handler.py"
    # Built by the model job from the MODEL_DIR the stack was started with (mounted at /model-source).
    assert found["build_info"]["model_name"] == "sentiment"
    assert found["build_info"]["model_dir"] == "model-source"
    assert "model_id" not in found["build_info"]
    assert re.fullmatch(r"[0-9a-f]{64}", found["build_info"]["fingerprint"])
    assert "sentiment_handler.py" in found["archived"]
    for name, digest in found["archived"].items():
        assert found["image"].get(name) == digest, f"{name} in the archive is not the image's handler/{name}"


@pytest.mark.parametrize("image", IMAGES)
def test_the_project_adds_no_secret_and_no_ca_setting_to_its_images(stack, image):
    base = {**BASE_IMAGES, "sentiment-nginx": NGINX_BASE}[image]
    layers = project_layers(image, base)
    assert layers, f"{image}: no build steps of its own found"
    for step in layers:
        assert not SECRET_ASSIGNMENT.search(step), f"{image}: a build step sets a secret-looking value: {step}"
        assert not any(name in step for name in CA_VARIABLES), f"{image}: a build step sets a CA bundle: {step}"
        assert not CA_FILE.search(step), f"{image}: a build step names a certificate file: {step}"
    # The stand-in bases carry this host's CA settings on purpose; the project adds none.
    added = {name: value for name, value in image_env(image).items() if image_env(base).get(name) != value}
    assert added, f"{image}: sets no environment of its own?"
    assert not [name for name in added if SECRET_NAME.search(name)], f"{image}: secret-looking variables in {added}"
    assert not set(added) & CA_VARIABLES, f"{image}: CA variables in {added}"


def test_no_container_carries_a_secret_or_a_non_standard_ca_path(stack):
    bases = {**BASE_IMAGES, "sentiment-nginx": NGINX_BASE}
    for cid, service in project_containers(stack).items():
        config = stack.inspect(cid)["Config"]
        env = dict(entry.split("=", 1) for entry in config["Env"] or [])
        # What the base image itself sets (a registry's python image has GPG_KEY, a public key
        # fingerprint) is not the project's; the image's and Compose's settings are.
        base_env = image_env(bases[config["Image"].split(":")[0]])
        ours = {name: value for name, value in env.items() if base_env.get(name) != value}
        # An empty variable holds no secret: Compose hands the model job HF_TOKEN, empty unless the
        # user sets one for a gated model.
        assert not [name for name, value in ours.items() if SECRET_NAME.search(name) and value], (
            f"{service}: {sorted(ours)}"
        )
        for name, value in env.items():
            for match in CA_FILE.finditer(value):
                assert match.group(0) in STANDARD_CA_FILES, f"{service}: {name}={value}"


def container_logs(cid):
    """Return a container's whole log, stdout and stderr."""
    result = run(["docker", "logs", cid], timeout=60)
    return result.stdout + result.stderr


def test_request_text_is_in_no_log_but_its_request_id_is_in_every_hop(stack):
    secret = f"zebra {uuid.uuid4().hex} lemonade"
    request_id = f"lockdown-{uuid.uuid4().hex}"
    headers = {"X-Request-ID": request_id}
    response = requests.post(f"{stack.url}/", json={"text": secret}, headers=headers, timeout=15)
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    # The same text in a batch, in an invalid request, and in a query string.
    for attempt in (
        {"json": {"texts": [secret, "It is worth it"]}},
        {"json": {"text": secret, "texts": [secret]}},
        {"json": {"text": secret}, "params": {"text": secret}},
        {"data": {"text": secret}},
    ):
        requests.post(f"{stack.url}/", headers=headers, timeout=15, **attempt)

    containers = project_containers(stack)
    needs_id = {"nginx", "app", "torchserve"}
    deadline = time.monotonic() + 10
    while True:
        logs = {cid: container_logs(cid) for cid in containers}
        seen = {containers[cid] for cid, text in logs.items() if request_id in text}
        if needs_id <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert needs_id <= seen, f"the request ID is missing from the logs of {needs_id - seen}"
    token = secret.split()[1]
    for cid, text in logs.items():
        assert token not in text, f"the request text is in the log of {containers[cid]} {cid[:12]}"
    # TorchServe's log files (a tmpfs) too.
    (torchserve,) = stack.container_ids("torchserve")
    files = run(["docker", "exec", torchserve, "grep", "-rlF", token, "/home/model-server/logs"], check=False)
    assert files.returncode == 1, f"the request text is in {files.stdout.split()} ({files.stderr.strip()})"
    files = run(["docker", "exec", torchserve, "grep", "-rlF", request_id, "/home/model-server/logs"], check=False)
    assert files.returncode == 0, "TorchServe's log files do not have the request ID either: wrong place?"
