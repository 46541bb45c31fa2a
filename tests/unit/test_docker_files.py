"""Static checks of the Docker files and the lock files: no engine, no network, milliseconds.

- every ${NGINX_*} placeholder of nginx/nginx.conf.template has a default in the image (its nginx
  stage's ENV, or nginx/defaults.env for the tunables the launcher reads too), and the entrypoint
  renders the template from whatever NGINX_* variables are set, empty tunables from their defaults;
- the base images are build arguments whose defaults are the official images, Compose passes them
  through, and the local stand-ins never carry an official image's name;
- facade/requirements.lock and tools/requirements.lock are in step with pyproject.toml's
  dependency groups (edit a pin without `make lock` and this fails), hash every pin with a wheel
  for each of the images' platforms (linux/amd64, linux/arm64), and leave torch out; the
  Dockerfile installs each image from its lock;
- docker-compose.yml locks every service down (the Docker tests check the running containers).
"""

import os
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest
import yaml
from packaging import tags
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from devtools.lock import PLATFORMS, PYTHON_VERSION, manylinux_tags
from facade.settings import Settings
from stack.launcher import NGINX_DEFAULTS_FILE, NGINX_SETTINGS, nginx_defaults, size_label
from tests.conftest import PROJECT_DIR
from tests.docker.conftest import COMPOSE_FILE, standin_bases

DOCKERFILE = PROJECT_DIR / "Dockerfile"
TEMPLATE = PROJECT_DIR / "nginx" / "nginx.conf.template"
ENTRYPOINT = PROJECT_DIR / "nginx" / "docker-entrypoint.sh"
LOCKS = {
    "facade": PROJECT_DIR / "facade" / "requirements.lock",
    "handler": PROJECT_DIR / "tools" / "requirements.lock",
}
# One pin, its continuation lines joined: `name==version --hash=sha256:... --hash=sha256:...`.
LOCK_PIN = re.compile(r"([a-z0-9]+(?:-[a-z0-9]+)*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)")
# Under each pin, one comment per hash naming its file.
LOCK_FILE = re.compile(r"    # (\S+\.whl) sha256:([0-9a-f]{64})")
# Named with their Debian suite: a suite-less tag moves to a new Debian when Docker Hub moves it.
OFFICIAL_BASES = {"PYTHON_IMAGE": "python:3.11-slim-bookworm", "DEBIAN_IMAGE": "debian:bookworm-slim"}
PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Za-z0-9_]+)\}")


def dockerfile_stages():
    """Return {stage name: [(INSTRUCTION, arguments)]}, continuation lines joined, comments dropped.

    What comes before the first FROM (the global ARGs) is under the name "".
    """
    stages, pending = {"": []}, ""
    current = stages[""]
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        instruction, _, arguments = (pending + line).strip().partition(" ")
        pending = ""
        if instruction.upper() == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((instruction.upper(), arguments.strip()))
    return stages


def env_defaults(stage):
    """Return the ENV name -> value pairs that a Dockerfile stage sets."""
    values = {}
    for instruction, arguments in dockerfile_stages()[stage]:
        if instruction == "ENV":
            values.update(token.split("=", 1) for token in shlex.split(arguments))
    return values


def arg_default(stage, name):
    """Return the default of `ARG name=default` in a Dockerfile stage."""
    for instruction, arguments in dockerfile_stages()[stage]:
        if instruction == "ARG" and arguments.startswith(f"{name}="):
            return arguments.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=... in the {stage} stage")


def parse_lock(group):
    """Return ({name: (version, {sha256: wheel file name})}, header comment lines) of one lock file.

    Every line after the header must be part of a pin (`name==version`, its hashes) or name a file.
    """
    pins, header, name = {}, [], None
    for line in LOCKS[group].read_text().replace("\\\n", " ").splitlines():
        if line.startswith("#") and not pins:
            header.append(line)
            continue
        if pin := LOCK_PIN.fullmatch(line):
            name = pin.group(1)
            assert name not in pins, f"{name} twice"
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", pin.group(3))
            pins[name] = (pin.group(2), dict.fromkeys(hashes))
            continue
        named = LOCK_FILE.fullmatch(line)
        assert named and name, f"{LOCKS[group].name}: not a pin or a file comment: {line!r}"
        file_name, digest = named.groups()
        assert digest in pins[name][1], f"{LOCKS[group].name}: {file_name} is not among {name}'s hashes"
        pins[name][1][digest] = file_name
    return pins, header


def read_lock(group):
    """Return ({name: version}, header comment lines) of one lock file."""
    pins, header = parse_lock(group)
    return {name: version for name, (version, _) in pins.items()}, header


def supported_tags(machine):
    """Return the wheel tags that CPython 3.11 installs on the images' glibc on `machine`."""
    platforms = manylinux_tags(machine)
    version = tuple(int(part) for part in PYTHON_VERSION.split("."))
    interpreter = f"cp{version[0]}{version[1]}"
    return {
        *tags.cpython_tags(version, [interpreter], platforms),
        *tags.compatible_tags(version, interpreter, platforms),
    }


def group_requirements(group):
    """Return the Requirements of one of pyproject.toml's dependency groups."""
    groups = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["dependency-groups"]
    return [Requirement(req) for req in groups[group] if isinstance(req, str)]


# ------------------------------------------------------------------------------------------ nginx


def nginx_image_defaults():
    """Return every default the nginx image starts from: its ENV, then nginx/defaults.env's tunables."""
    return {**env_defaults("nginx"), **nginx_defaults()}


def test_every_nginx_placeholder_has_a_default_in_the_image():
    placeholders = set(PLACEHOLDER.findall(TEMPLATE.read_text()))
    assert placeholders, "the template has no ${NGINX_*} placeholder?"
    missing = placeholders - set(nginx_image_defaults())
    assert not missing, (
        f"nginx/nginx.conf.template uses {sorted(missing)}, but the image has no default for them: add "
        "`NAME=default` to nginx/defaults.env (a tunable, read natively too) or the nginx stage's ENV"
    )


def test_the_image_reads_the_tunables_defaults_from_the_file_the_launcher_reads():
    assert env_defaults("nginx")["NGINX_DEFAULTS"] == "/etc/sentiment-nginx/defaults.env"
    copies = [args for instruction, args in dockerfile_stages()["nginx"] if instruction == "COPY"]
    assert any("nginx/defaults.env" in args.split()[:-1] and args.endswith("/etc/sentiment-nginx/") for args in copies)
    # No tunable keeps a second default in the image's ENV.
    assert not set(env_defaults("nginx")) & set(NGINX_SETTINGS)
    assert set(nginx_defaults()) == set(NGINX_SETTINGS)


needs_shell_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sh", "envsubst", "awk")), reason="needs sh, envsubst and awk"
)


def render(tmp_path, template_text, **overrides):
    """Run the entrypoint on a template with the image's defaults; return (exit status, config, stderr)."""
    template = tmp_path / "nginx.conf.template"
    template.write_text(template_text)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **env_defaults("nginx"),
        "NGINX_DEFAULTS": str(NGINX_DEFAULTS_FILE),
        "NGINX_RUN_DIR": str(tmp_path / "run"),
        "NGINX_TEMPLATE": str(template),
        **overrides,
    }
    env = {name: value for name, value in env.items() if value is not None}
    config = tmp_path / "run" / "nginx.conf"
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "cat", str(config)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return result.returncode, result.stdout, result.stderr


@needs_shell_tools
def test_the_entrypoint_renders_the_template_with_the_image_defaults(tmp_path):
    status, config, stderr = render(tmp_path, TEMPLATE.read_text())
    assert status == 0, stderr
    assert not PLACEHOLDER.search(config)
    assert "listen 8080;" in config
    # nginx's own variables are left alone.
    for variable in ("$request_id", "$hostname", "$upstream_addr", "$binary_remote_addr"):
        assert variable in config


@needs_shell_tools
def test_the_entrypoint_substitutes_a_new_placeholder_without_being_edited(tmp_path):
    status, config, stderr = render(tmp_path, "a ${NGINX_LISTEN} b ${NGINX_BRAND_NEW} c $host\n", NGINX_BRAND_NEW="42")
    assert status == 0, stderr
    assert config == "a 8080 b 42 c $host\n"


@needs_shell_tools
@pytest.mark.parametrize("value", [None, ""])
def test_the_entrypoint_fills_an_unset_or_empty_tunable_from_the_defaults_file(tmp_path, value):
    status, config, stderr = render(
        tmp_path, "${NGINX_LIMIT_CONN_PER_CLIENT} ${NGINX_LIMIT_REQ}\n", NGINX_LIMIT_REQ=value
    )
    assert status == 0, stderr
    assert config == f"{nginx_defaults()['NGINX_LIMIT_CONN_PER_CLIENT']} {nginx_defaults()['NGINX_LIMIT_REQ']}\n"


@needs_shell_tools
def test_the_entrypoint_keeps_a_tunable_that_is_set(tmp_path):
    status, config, stderr = render(tmp_path, "${NGINX_LIMIT_CONN_PER_CLIENT}\n", NGINX_LIMIT_CONN_PER_CLIENT="4")
    assert status == 0, stderr
    assert config == "4\n"


@needs_shell_tools
@pytest.mark.parametrize("value", [None, ""])
def test_the_entrypoint_refuses_a_placeholder_without_a_value(tmp_path, value):
    status, config, stderr = render(tmp_path, "x ${NGINX_LISTEN} ${NGINX_NOT_SET};\n", NGINX_NOT_SET=value)
    assert status == 1
    assert "NGINX_NOT_SET" in stderr
    assert config == ""


# ------------------------------------------------------------------------------------ base images


def test_the_nginx_image_refuses_bodies_above_the_facades_limit_with_the_same_size_in_words():
    # The one Docker-side copy of facade/settings.py's limit (the engine cannot read Python).
    nginx = env_defaults("nginx")
    limit = Settings().max_body_bytes
    assert int(nginx["NGINX_MAX_BODY_SIZE"]) == limit
    assert nginx["NGINX_MAX_BODY_LABEL"] == size_label(limit)


def test_the_base_images_are_build_arguments_that_default_to_the_official_images():
    global_args = dict(args.split("=", 1) for instruction, args in dockerfile_stages()[""] if instruction == "ARG")
    assert global_args == OFFICIAL_BASES
    stage_names = set(dockerfile_stages())
    for stage, instructions in dockerfile_stages().items():
        for instruction, arguments in instructions:
            if instruction == "FROM":
                base = arguments.split()[0]
                assert base in {"${PYTHON_IMAGE}", "${DEBIAN_IMAGE}"} | stage_names, f"{stage} is built FROM {base}"
    # Compose hands both to every build (the legacy builder builds every stage before the target),
    # from the environment, with the same defaults.
    for name, service in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items():
        build_args = service["build"]["args"]
        for arg, official in OFFICIAL_BASES.items():
            assert build_args.get(arg) == f"${{{arg}:-{official}}}", f"{name}: {arg}={build_args.get(arg)}"


def test_the_local_stand_ins_never_take_an_official_images_name():
    for arch in ("amd64", "arm64"):
        for arg, standin in standin_bases(arch).items():
            # Namespaced: a stand-in is never what `FROM python:...` of another project finds.
            assert standin.startswith("sentiment-local/")
            assert standin.removeprefix("sentiment-local/").removesuffix(f"-{arch}") == OFFICIAL_BASES[arg]


# ------------------------------------------------------------------------------------------ locks


@pytest.mark.parametrize("group", sorted(LOCKS))
def test_the_lock_pins_every_requirement_of_its_group_as_pyproject_does(group):
    pins, _ = read_lock(group)
    assert pins, f"{LOCKS[group]} pins nothing"
    stale = []
    for requirement in group_requirements(group):
        name = canonicalize_name(requirement.name)
        locked = pins.get(name)
        if locked is None or not requirement.specifier.contains(locked, prereleases=True):
            stale.append(f"{requirement} (lock: {locked})")
    assert not stale, f"{LOCKS[group].name} is out of step with pyproject.toml for {stale}: run `make lock`"


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("group", sorted(LOCKS))
def test_every_locked_package_has_a_hashed_wheel_for_each_image_platform(group, platform):
    pins, _ = parse_lock(group)
    supported = supported_tags(PLATFORMS[platform])
    unusable = []
    for name, (version, files) in pins.items():
        assert all(files.values()), f"{LOCKS[group].name}: {name} has hashes that name no file: {files}"
        for file_name in files.values():
            wheel_name, wheel_version, _, _ = parse_wheel_filename(file_name)
            assert (wheel_name, wheel_version) == (name, Version(version)), f"{file_name} under {name}=={version}"
        if not any(parse_wheel_filename(file_name)[3] & supported for file_name in files.values()):
            unusable.append(f"{name}=={version}")
    assert not unusable, (
        f"{LOCKS[group].relative_to(PROJECT_DIR)} has no hashed wheel for {platform} "
        f"(CPython {PYTHON_VERSION}) of {unusable}: run `make lock`"
    )


def test_the_handler_lock_leaves_torch_out_but_has_its_dependencies():
    pins, header = read_lock("handler")
    assert "torch" not in pins
    assert not [name for name in pins if name.startswith(("nvidia-", "triton"))]
    # The header lists torch's own requirements, resolved into the lock.
    start = next(i for i, line in enumerate(header) if line.rstrip().endswith("metadata:"))
    torch_requirements = [Requirement(line[1:].strip()) for line in header[start + 1 :] if line.startswith("#   ")]
    assert {canonicalize_name(r.name) for r in torch_requirements} >= {"sympy", "networkx", "jinja2", "filelock"}
    for requirement in torch_requirements:
        locked = pins.get(canonicalize_name(requirement.name))
        assert locked and requirement.specifier.contains(locked, prereleases=True), f"{requirement}: {locked}"


def test_torch_has_one_version_everywhere():
    (locked,) = {m for line in read_lock("handler")[1] for m in re.findall(r"torch==(\S+) itself", line)}
    dockerfile = arg_default("torchserve-build", "TORCH_VERSION")
    compose = re.search(r"\$\{TORCH_VERSION:-([^}]+)\}", COMPOSE_FILE.read_text()).group(1)
    makefile = re.search(r"^TORCH_VERSION \?= (\S+)$", (PROJECT_DIR / "Makefile").read_text(), re.MULTILINE).group(1)
    assert {locked, dockerfile, compose, makefile} == {dockerfile}, (
        f"lock {locked}, Dockerfile {dockerfile}, compose {compose}, Makefile {makefile}"
    )


@pytest.mark.parametrize(("group", "stage"), [("facade", "facade-build"), ("handler", "torchserve-build")])
def test_the_image_installs_exactly_its_lock(group, stage):
    instructions = dockerfile_stages()[stage]
    copies = [args for instruction, args in instructions if instruction == "COPY"]
    assert f"{LOCKS[group].relative_to(PROJECT_DIR)} /tmp/requirements.lock" in copies
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "pip install --require-hashes --no-deps -r /tmp/requirements.lock" in runs
    assert "pip check" in runs
    # Nothing else comes from an index unchecked: no dependency group, no unpinned pip upgrade.
    assert "--group" not in DOCKERFILE.read_text()
    assert not re.search(r'pip install [^;]*"pip', runs)


# ---------------------------------------------------------------------------------------- compose


def test_every_compose_service_is_locked_down():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert set(services) == {"model", "upgrade", "torchserve", "app", "nginx"}
    for name, service in services.items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("mem_limit"), f"{name} has no mem_limit"
        assert service.get("pids_limit"), f"{name} has no pids_limit"
        assert not service.get("privileged") and not service.get("cap_add"), name
        for mount in service.get("tmpfs", []):
            assert ":" in mount and "size=" in mount.split(":", 1)[1], f"{name}: tmpfs {mount} has no size"
        for port in service.get("ports", []):
            assert port.startswith(("127.0.0.1:", "${HTTP_BIND:-127.0.0.1}:")), f"{name} publishes {port}"
    assert {name for name, service in services.items() if service.get("ports")} == {"nginx"}


def test_compose_can_scale_torchserve_and_its_network_has_no_route_out():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    torchserve = compose["services"]["torchserve"]

    # `--scale torchserve=2` fails on a fixed container name or host port.
    assert "container_name" not in torchserve and "ports" not in torchserve
    assert torchserve["networks"] == ["backend"]
    assert compose["networks"]["backend"] == {"internal": True}
    # The model job may download from the hub: never on the internal network.
    assert "backend" not in compose["services"]["model"]["networks"]


def test_compose_passes_every_nginx_tunable_on_and_leaves_the_default_to_the_image():
    environment = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["nginx"]["environment"]
    # Unset, the variable arrives empty and the entrypoint takes nginx/defaults.env's value.
    assert {name: environment.get(name) for name in NGINX_SETTINGS} == {
        name: f"${{{name}:-}}" for name in NGINX_SETTINGS
    }


def test_compose_hands_a_hugging_face_token_to_the_model_job_only():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert services["model"]["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"  # noqa: S105 (a reference, not a secret)
    assert all(
        "HF_TOKEN" not in (service.get("environment") or {}) for name, service in services.items() if name != "model"
    )


def test_the_upgrade_tool_runs_only_when_asked_with_the_store_writable_and_no_route_out():
    upgrade = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["upgrade"]

    assert upgrade["profiles"] == ["tools"]  # never started by `up`
    # On no network: the management API is a socket in each TorchServe container (switch-model.sh
    # execs there); this container only writes the store.
    assert upgrade["network_mode"] == "none" and "networks" not in upgrade
    assert "model-store:/home/model-server/model-store" in upgrade["volumes"]
    assert upgrade["entrypoint"][:3] == ["python", "-m", "tools.model_upgrade"]
