"""The README's quick start, run as written on a clean machine: a fresh container of a plain Debian minbase.

The commands come from README.md itself, from the bash block between the `<!-- clean-machine: start`
and `<!-- clean-machine: end -->` comments, so a set-up step the README forgets fails here instead
of on a user's machine. The container starts from the Debian stand-in that
.ci/build-base-images.sh --print-tags names (a debootstrap minbase: no make, no Python, no Java,
no nginx, no sudo, no apt lists), receives the project's tracked files as a clean clone has them,
and runs each line in its own network namespace twice over:
in a root shell (a minimal Debian box) and as a user with passwordless sudo (a desktop), so that
`make up` takes both of its paths to apt. Each step must exit 0, test_app.py must print the test
model's labels for its seed sentences, and `make down` must leave no process behind.

The only differences from a user's machine are the offline substitutes the CI needs, all named here:

- the model: MODEL_DIR points at ../shared/models/minilm-sst2, mounted read-only (no model hub);
- torch: TORCH_INDEX_URL= and PIP_FIND_LINKS at the local CPU torch wheel that `make docker-wheels`
  takes from pip's own configuration (no PyTorch wheel index); other packages come from PyPI;
- the base image: the local Debian stand-in from .ci/build-base-images.sh (no registry); apt uses
  its Debian mirror, and it carries the host's CA bundle (PyPI is reached through a TLS proxy);
- sudo: for root, a pass-through `sudo` on PATH stands for the README's "as root, leave out sudo"
  (a minimal Debian has none); the sudo user gets Debian's real sudo, installed before the run.

Each run's output is streamed to test-artifacts/clean-machine/<container>.log.
"""

import io
import re
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR
from tests.docker.conftest import STANDIN_BASES, ensure_engine, run
from tests.readme import readme_commands

pytestmark = [pytest.mark.docker, pytest.mark.slow]

README = PROJECT_DIR / "README.md"
ARTIFACTS = PROJECT_DIR / "test-artifacts" / "clean-machine"
SUDOER = "user"
MODEL_MOUNT = "/srv/clean-machine/model"
WHEELS_MOUNT = "/srv/clean-machine/wheels"
# What the stand-in model says about test_app.py's seed sentences (its printed label column).
EXPECTED_LABELS = {
    "It is worth it": "POSITIVE",
    "It is a waste of time and money": "NEGATIVE",
    "The acting was wonderful and the story moved me": "POSITIVE",
    "I would not recommend it to anyone": "NEGATIVE",
}
# `make up` from nothing: apt (Java, nginx, Python), pip (torch, the handler and facade groups), the
# .mar's ONNX export, TorchServe's start. Measured figures are in docs/testing.md.
RUN_TIMEOUT_S = 1200
STEP_LINE = re.compile(r"^=== clean-machine step (\d+)/(\d+)(?: exited (\d+) after (\d+) s|: (.*))$")
RESULT_LINE = re.compile(r"^(POSITIVE|NEGATIVE)\s+(\d\.\d{4})\s+(\S+)\s+(.+)$")


def step_script(commands, source_dir):
    """Return a bash script that runs each command as written in source_dir and stops at the first that fails."""
    lines = ["set -o pipefail", f"cd {source_dir}"]
    total = len(commands)
    for number, command in enumerate(commands, 1):
        quoted = command.replace("'", "'\\''")
        lines += [
            f"printf '\\n=== clean-machine step {number}/{total}: %s\\n' '{quoted}'",
            "started=$SECONDS",
            command,
            "status=$?",
            f'echo "=== clean-machine step {number}/{total} exited $status after $((SECONDS - started)) s"',
            '[ "$status" -eq 0 ] || exit "$status"',
        ]
    return "\n".join(lines) + "\n"


def step_outputs(log):
    """Return {step number: (command, exit status or None, seconds or None, output lines)} from the log."""
    steps, current = {}, None
    for line in log.splitlines():
        match = STEP_LINE.match(line)
        if match and match.group(5) is not None:
            current = int(match.group(1))
            steps[current] = [match.group(5), None, None, []]
        elif match:
            steps[int(match.group(1))][1:3] = [int(match.group(3)), int(match.group(4))]
            current = None
        elif current is not None:
            steps[current][3].append(line)
    return {number: tuple(step) for number, step in steps.items()}


def printed_labels(lines):
    """Return {text: label} from test_app.py's result lines (label, score, container ID, text)."""
    return {match.group(4): match.group(1) for match in map(RESULT_LINE.match, lines) if match}


def tracked_tree():
    """Return a tar archive (bytes) of the checkout's tracked files as they are now, under sentiment/."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True)
    names = listing.stdout.split(b"\0")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in filter(None, names):
            path = PROJECT_DIR / name.decode()
            if path.is_file() or path.is_symlink():  # a tracked file deleted in the tree is not shipped
                tar.add(path, arcname=f"sentiment/{name.decode()}", recursive=False)
    return buffer.getvalue()


def local_torch_wheels():
    """Return wheels/ once it holds the local CPU torch wheel (from pip's configuration), else None."""
    run(["make", "--no-print-directory", "docker-wheels"], timeout=900)
    wheels = PROJECT_DIR / "wheels"
    return wheels if any(wheels.glob("torch-*.whl")) else None


def container_processes(name):
    """Return {pid: command} of the container's processes that are alive (zombies are not)."""
    out = run(["docker", "top", name, "-eo", "pid,stat,args"]).stdout.splitlines()[1:]
    rows = [line.split(None, 2) for line in out if line.strip()]
    return {pid: args for pid, stat, args in rows if not stat.startswith("Z")}


def put_file(container, path, text, mode="644"):
    """Write a file into the running container."""
    command = ["docker", "exec", "-i", container, "sh", "-c", f"cat >{path} && chmod {mode} {path}"]
    subprocess.run(command, input=text, text=True, check=True, timeout=60)


@dataclass(frozen=True)
class Machine:
    """A running clean container and the user whose shell runs the README's commands."""

    name: str
    user: str
    home: str
    env: dict

    @property
    def source_dir(self):
        """Return where the project lies in the container, as a clone in the user's home."""
        return f"{self.home}/sentiment"


def add_user_with_sudo(name):
    """Give the container a user with passwordless sudo, as on a desktop; apt's lists are dropped again."""
    setup = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo >/dev/null"
        f" && rm -rf /var/lib/apt/lists/* && useradd --create-home {SUDOER}"
        f" && echo '{SUDOER} ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/{SUDOER}"
    )
    run(["docker", "exec", name, "sh", "-c", setup], timeout=300)


@pytest.fixture(params=["root", SUDOER])
def machine(request, standin_model_dir):
    """A fresh container of the plain Debian stand-in with the project copied in; removed afterwards.

    `root`: a root shell, as on a minimal Debian box (a pass-through `sudo` stands for the README's
    "leave out sudo"); `SUDOER`: a user with passwordless sudo, so `make up` takes its sudo path.
    """
    ensure_engine()
    run(["bash", ".ci/build-base-images.sh"], timeout=900)
    image = STANDIN_BASES["DEBIAN_IMAGE"]
    wheels = local_torch_wheels()
    user = request.param
    name = f"sentiment-clean-machine-{user}-{uuid.uuid4().hex[:8]}"
    mounts = ["-v", f"{Path(standin_model_dir).resolve()}:{MODEL_MOUNT}:ro"]
    env = {"MODEL_DIR": MODEL_MOUNT}
    if wheels is not None:
        mounts += ["-v", f"{wheels.resolve()}:{WHEELS_MOUNT}:ro"]
        env |= {"TORCH_INDEX_URL": "", "PIP_FIND_LINKS": WHEELS_MOUNT}
    home = "/root" if user == "root" else f"/home/{user}"
    machine = Machine(name, user, home, env | {"HOME": home})
    try:
        run(["docker", "run", "-d", "--init", "--name", name, *mounts, image, "sleep", "infinity"])
        if user == "root":
            put_file(name, "/usr/local/bin/sudo", '#!/bin/sh\nexec "$@"\n', mode="755")
        else:
            add_user_with_sudo(name)
        copy = ["docker", "cp", "-", f"{name}:{home}"]
        subprocess.run(copy, input=tracked_tree(), capture_output=True, check=True, timeout=120)
        run(["docker", "exec", name, "chown", "-R", f"{user}:", machine.source_dir])
        yield machine
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120, check=False)


def run_logged(machine, script_path, log_path):
    """Run the script as the machine's user with its substitutes, output to log_path; return (exit, seconds)."""
    env_args = [arg for key, value in machine.env.items() for arg in ("-e", f"{key}={value}")]
    command = ["docker", "exec", "-u", machine.user, *env_args, machine.name, "bash", script_path]
    started = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        seconds = time.monotonic() - started
        log_file.write(f"\n# whole run: {seconds:.0f} s, docker exec exit {process.returncode}\n")
    return process.returncode, seconds


def test_readme_quick_start_works_as_written_on_a_plain_debian_minbase(machine):
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert any(command.startswith("make up") for command in commands), commands
    assert any("test_app.py" in command for command in commands), commands
    assert commands[-1].startswith("make down"), commands
    script_path = f"{machine.home}/clean-machine-steps.sh"
    put_file(machine.name, script_path, step_script(commands, machine.source_dir))
    before = container_processes(machine.name)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"{machine.name}.log"
    substitutes = {key: value for key, value in machine.env.items() if key != "HOME"}
    header = [f"# user: {machine.user}; substitutes: {substitutes}", "# commands (README.md's clean-machine block):"]
    log_path.write_text("\n".join(header + [f"#   {command}" for command in commands]) + "\n", encoding="utf-8")
    returncode, seconds = run_logged(machine, script_path, log_path)
    log = log_path.read_text(encoding="utf-8", errors="replace")

    steps = step_outputs(log)
    failed = [(number, step[0], step[1]) for number, step in steps.items() if step[1] != 0]
    # The failing step's own last lines (the earlier steps' output would hide them), else the log's.
    shown = steps[failed[0][0]][3] if failed else log.splitlines()
    assert returncode == 0 and len(steps) == len(commands) and not failed, (
        f"the README's quick start failed on a clean Debian as {machine.user} (step, command, exit status: "
        f"{failed or 'none'}; docker exec exit {returncode} after {seconds:.0f} s; full log {log_path})\n"
        + "\n".join(shown[-40:])
    )

    test_app_lines = next(step[3] for step in steps.values() if "test_app.py" in step[0])
    labels = printed_labels(test_app_lines)
    assert labels, "test_app.py printed no result line:\n" + "\n".join(test_app_lines[-30:])
    assert labels == {text: EXPECTED_LABELS[text] for text in labels}, labels
    assert set(labels) == set(EXPECTED_LABELS), f"not every seed sentence came back: {labels}"

    left = {pid: args for pid, args in container_processes(machine.name).items() if pid not in before}
    assert not left, f"`make down` left processes of the stack running: {left}"
