"""The three images build for linux/arm64 (Apple Silicon, Graviton), under emulation, and their
arm64 binaries run: Python, nginx, Java, transformers and TorchServe's packages, the facade
serving /healthz; onnxruntime is checked as an installed aarch64 library (its import does not
return under user-mode QEMU).

The CI host is amd64 with no registry: .ci/build-base-images.sh --arch arm64 makes arm64 stand-ins
of the default base images (debootstrap of the same suite, qemu-user-static through binfmt_misc),
and a BuildKit build with --platform linux/arm64 builds each target on them, under unique tags
that the module removes at the end.

The TorchServe image is built with TORCH_VARIANT=none (no torch): the aarch64 CPU wheel comes from
the PyTorch CPU index, which CI cannot reach, PyPI's aarch64 wheel is a CUDA build, and torch
could not run under user-mode QEMU anyway. So serving on arm64 is expected to work, not tested;
docs/docker.md says what is tested and what is only expected.
"""

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
import requests

from tests.conftest import PROJECT_DIR
from tests.docker.conftest import BASE_IMAGES_SCRIPT, ensure_engine, run, standin_bases

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TARGETS = ("nginx", "facade", "torchserve")
BUILD_TIMEOUT_S = 1200
EMULATION_UNAVAILABLE = 3  # .ci/build-base-images.sh's exit status when it cannot run arm64 binaries


def locked_version(name):
    """Return the version tools/requirements.lock pins for a package."""
    lock = (PROJECT_DIR / "tools" / "requirements.lock").read_text()
    return re.search(rf"^{name}==(\S+)", lock, re.MULTILINE).group(1)


def buildkit_command():
    """Return the command that builds for another platform into the local image store."""
    if subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "buildx", "build", "--load"]
    # Debian's docker.io client (20.10) has BuildKit built in; a newer client without buildx does not.
    if shutil.which("docker", path="/usr/bin"):
        return ["env", "DOCKER_BUILDKIT=1", "/usr/bin/docker", "build"]
    pytest.skip("no BuildKit client (docker buildx or Debian's /usr/bin/docker) to build for linux/arm64")


def arm64_bases():
    """Make sure the arm64 stand-ins exist; return {build argument: tag}, or skip without emulation."""
    if os.geteuid() != 0:
        pytest.skip("building the arm64 base images needs root (debootstrap, binfmt_misc)")
    result = run(["bash", str(BASE_IMAGES_SCRIPT), "--arch", "arm64"], timeout=900, check=False)
    if result.returncode == EMULATION_UNAVAILABLE:
        pytest.skip(f"no arm64 emulation on this host: {result.stderr.strip()[-400:]}")
    if result.returncode != 0:
        pytest.fail(f"build-base-images.sh --arch arm64 failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    print(result.stdout[-1500:])
    return standin_bases("arm64")


@pytest.fixture(scope="module")
def images(capsys_module_report):
    """Build nginx, facade and torchserve for linux/arm64 under unique tags; remove them afterwards."""
    ensure_engine()
    bases = arm64_bases()
    build = buildkit_command()
    suffix = uuid.uuid4().hex[:8]
    tags = {target: f"sentiment-{target}:arm64-test-{suffix}" for target in TARGETS}
    seconds = {}
    try:
        for target, tag in tags.items():
            args = [f"--build-arg={arg}={image}" for arg, image in {**bases, "TORCH_VARIANT": "none"}.items()]
            start = time.monotonic()
            command = [*build, "--platform", "linux/arm64", "--target", target, *args, "-t", tag, "."]
            run(command, timeout=BUILD_TIMEOUT_S)
            seconds[target] = time.monotonic() - start
        capsys_module_report(
            "linux/arm64 builds under emulation: "
            + ", ".join(f"{target} {s:.0f} s" for target, s in seconds.items())
            + f" (total {sum(seconds.values()):.0f} s, {os.cpu_count()} CPUs)"
        )
        yield tags
    finally:
        for tag in tags.values():
            subprocess.run(["docker", "image", "rm", tag], capture_output=True, check=False)


@pytest.fixture(scope="module")
def capsys_module_report(request):
    """Return a function that prints a line straight to the terminal (the CI log), uncaptured."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def report(line):
        with capture.global_and_fixture_disabled():
            print(f"\n[arm64] {line}")

    return report


def run_in(tag, *command, entrypoint=None, timeout=120):
    """Run a command in a fresh linux/arm64 container of the image; return its stdout + stderr."""
    name = f"sentiment-arm64-run-{uuid.uuid4().hex[:8]}"
    options = ["--entrypoint", entrypoint] if entrypoint is not None else []
    try:
        result = run(
            ["docker", "run", "--rm", "--name", name, "--platform", "linux/arm64", *options, tag, *command],
            timeout=timeout,
        )
    finally:  # a timeout leaves the container running
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    return result.stdout + result.stderr


def test_every_image_is_labelled_linux_arm64(images):
    for tag in images.values():
        platform = run(["docker", "image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", tag]).stdout.strip()
        assert platform == "linux/arm64", tag


@pytest.mark.parametrize("target", ["facade", "torchserve"])
def test_the_images_python_is_an_aarch64_binary(images, target):
    machine = run_in(images[target], "python", "-c", "import platform; print(platform.machine())", entrypoint="")
    assert machine.strip() == "aarch64"


def test_the_nginx_image_runs_its_arm64_nginx(images):
    assert run_in(images["nginx"], "uname", "-m", entrypoint="").strip() == "aarch64"
    assert "nginx version: nginx/1.22" in run_in(images["nginx"], "nginx", "-v", entrypoint="")


def test_the_torchserve_image_has_java_17_and_the_handlers_libraries_but_no_torch(images):
    tag = images["torchserve"]
    assert 'version "17.' in run_in(tag, "java", "-version", entrypoint="")
    # onnxruntime is installed as an aarch64 library, not imported: its import does not return
    # under user-mode QEMU (like torch, it cannot run there; on a real arm64 machine it does).
    probe = (
        "import glob, importlib.metadata, importlib.util, transformers, tokenizers, ts, model_archiver; "
        "[ort] = importlib.util.find_spec('onnxruntime').submodule_search_locations; "
        "[lib] = glob.glob(ort + '/capi/onnxruntime_pybind11_state*.so'); "
        "machine = int.from_bytes(open(lib, 'rb').read(20)[18:20], 'little'); "
        "print('probe:', importlib.metadata.version('onnxruntime'), machine, transformers.__version__, "
        "importlib.util.find_spec('torch'))"
    )
    output = run_in(tag, "python", "-c", probe, entrypoint="")  # transformers warns of no PyTorch
    [line] = [line for line in output.splitlines() if line.startswith("probe: ")]
    onnxruntime_version, elf_machine, transformers_version, torch_spec = line.split()[1:]
    assert onnxruntime_version == locked_version("onnxruntime")
    assert elf_machine == "183"  # EM_AARCH64
    assert transformers_version == locked_version("transformers")
    assert torch_spec == "None"  # TORCH_VARIANT=none, as the module docstring says


def test_the_arm64_facade_serves_healthz(images):
    # The facade needs no torch: its arm64 Gunicorn and Flask can serve under emulation.
    name = f"sentiment-arm64-facade-{uuid.uuid4().hex[:8]}"
    run(["docker", "run", "-d", "--name", name, "--platform", "linux/arm64", "-p", "127.0.0.1::5000", images["facade"]])
    try:
        port = run(["docker", "port", name, "5000/tcp"]).stdout.split(":")[-1].strip()
        deadline, last = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
                if response.status_code == 200:
                    break
                last = response.status_code
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(1)
        else:
            logs = run(["docker", "logs", "--tail", "30", name], check=False)
            pytest.fail(f"/healthz not 200 within 120 s (last: {last})\n{logs.stdout}{logs.stderr}")
        assert response.json()["status"] == "ok"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
