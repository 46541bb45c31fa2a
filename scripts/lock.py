"""Write the images' lock files from pyproject.toml's dependency groups: `make lock`.

    facade/requirements.lock   <- [dependency-groups] facade   (the sentiment-facade image)
    handler/requirements.lock  <- [dependency-groups] handler  (the sentiment-torchserve image)
                                  plus torch's own dependencies, but not torch

Every line is `name==version --hash=sha256:<digest>`: the one file pip's resolver picked for the
images' platform (Linux x86_64, CPython 3.11, wheels only) from PyPI. The Dockerfile installs
them with `pip install --require-hashes --no-deps -r <lock>` and then runs `pip check`, so an
image gets exactly these files or the build fails.

The resolver is pip's own (`pip install --dry-run --ignore-installed --report`), run in isolated
mode with no pip configuration, so nothing installed here and no local index or wheelhouse can
leak into a lock. It must run on CPython 3.11 on Linux x86_64 (environment markers are evaluated
against the running interpreter) with pip >= 25.1 (`--group`): the project's .venv.

torch is not in the handler lock: its CPU wheel comes from the PyTorch CPU index or the build
context's wheels/, not from PyPI (whose torch is the multi-GB CUDA build), and the Dockerfile
pins it by version and refuses a CUDA build. Its dependencies (sympy, networkx, jinja2, ...) come
from PyPI like everything else, so they are resolved here from torch's own metadata: the wheel in
wheels/ when there is one, else TORCH_INDEX_URL (empty: pip's own configured sources).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT_DIR / "pyproject.toml"
LOCKS = {
    "facade": PROJECT_DIR / "facade" / "requirements.lock",
    "handler": PROJECT_DIR / "handler" / "requirements.lock",
}
IMAGES = {"facade": "sentiment-facade", "handler": "sentiment-torchserve"}
DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_TORCH_VERSION = "2.13.0"
DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
PLATFORM = "Linux x86_64, CPython 3.11 (the images' python:3.11-slim), wheels only"
# Distributions that only a CUDA build of torch depends on.
CUDA_ONLY = re.compile(r"^(nvidia-|triton\b|cuda-)", re.IGNORECASE)


class LockError(Exception):
    """Something a person must fix; the message says what."""


def normalize(name):
    """Return the PEP 503 normalized form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def check_interpreter():
    """Refuse to lock from an interpreter whose markers and wheel tags differ from the images'."""
    here = (platform.python_implementation(), sys.version_info[:2], platform.system(), platform.machine())
    if here != ("CPython", (3, 11), "Linux", "x86_64"):
        raise LockError(f"run this with CPython 3.11 on Linux x86_64 (the images' platform), not {here}")


def check_pip():
    """Refuse a pip without dependency groups (`--group` came with pip 25.1)."""
    result = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"pip (\d+)\.(\d+)", result.stdout)
    if not match or (int(match.group(1)), int(match.group(2))) < (25, 1):
        found = (result.stdout or result.stderr).strip()
        raise LockError(f"needs pip >= 25.1 (for --group) in {sys.executable}, found: {found}")


def pip_env():
    """Return an environment for pip without any pip configuration (files or PIP_* variables)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def run_pip(args, *, isolated=True):
    """Run `python -m pip <args>`; raise LockError with pip's output when it fails."""
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env=pip_env() if isolated else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LockError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def dry_run_report(args, *, isolated=True):
    """Return pip's installation report for `pip install --dry-run --ignore-installed <args>`."""
    with tempfile.TemporaryDirectory(prefix="lock-") as temp:
        report = Path(temp) / "report.json"
        isolation = ["--isolated"] if isolated else []
        run_pip(
            ["install", *isolation, "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *args],
            isolated=isolated,
        )
        return json.loads(report.read_text())


def torch_requirements(version, index_url, wheels_dir):
    """Return torch's own (non-extra) requirements and where its metadata came from."""
    wheels = sorted(wheels_dir.glob(f"torch-{version}*.whl")) if wheels_dir.is_dir() else []
    if wheels:
        with zipfile.ZipFile(wheels[0]) as wheel:
            (name,) = [n for n in wheel.namelist() if re.fullmatch(r"torch-[^/]+\.dist-info/METADATA", n)]
            metadata = wheel.read(name).decode()
        requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist")]
        full_version = re.search(r"^Version: (\S+)$", metadata, re.MULTILINE).group(1)
        source = "wheels/"
    else:
        index = ["--index-url", index_url] if index_url else []
        # With an index, pip's configuration stays out; without one, pip's own sources (a local
        # wheelhouse in its configuration) supply torch, as for `make install TORCH_INDEX_URL=`.
        torch_only = [*index, "--no-deps", "--only-binary", ":all:", f"torch=={version}"]
        report = dry_run_report(torch_only, isolated=bool(index))
        (item,) = report["install"]
        requires = item["metadata"].get("requires_dist", [])
        full_version = item["metadata"]["version"]
        source = index_url or "pip's configured sources"
    requires = [req for req in requires if "extra ==" not in req.replace("'", '"')]
    cuda = [req for req in requires if CUDA_ONLY.match(req)]
    if cuda:
        raise LockError(f"torch {full_version} from {source} is a CUDA build (it needs {cuda}); use a CPU wheel")
    return requires, full_version


def resolve(requirements, index_url):
    """Return [(name, version, sha256)] for what pip resolves `requirements` to, sorted by name."""
    report = dry_run_report(["--index-url", index_url, "--only-binary", ":all:", *requirements])
    pins = []
    for item in report["install"]:
        name, version = normalize(item["metadata"]["name"]), item["metadata"]["version"]
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            raise LockError(f"pip reported no sha256 for {name}=={version} ({item['download_info'].get('url')})")
        pins.append((name, version, digest))
    return sorted(pins)


def render(group, pins, notes):
    """Return the text of one lock file."""
    lock = LOCKS[group].relative_to(PROJECT_DIR)
    header = [
        f"# {lock}: every Python dependency of the {IMAGES[group]} image, pinned with its hash.",
        f"# Generated by scripts/lock.py from pyproject.toml's dependency group `{group}`; do not edit.",
        "# Regenerate after changing pyproject.toml: make lock (or .venv/bin/python scripts/lock.py).",
        f"# Platform: {PLATFORM}; files from PyPI.",
        f"# The Dockerfile installs it with: pip install --require-hashes --no-deps -r {lock} && pip check",
        *(f"# {line}" for line in notes),
    ]
    body = [f"{name}=={version} --hash=sha256:{digest}" for name, version, digest in pins]
    return "\n".join([*header, *body]) + "\n"


def group_requirements(group):
    """Return the requirement strings of one of pyproject.toml's dependency groups."""
    groups = tomllib.loads(PYPROJECT.read_text())["dependency-groups"]
    return [req for req in groups[group] if isinstance(req, str)]


def lock_texts(index_url, torch_version, torch_index_url, wheels_dir):
    """Return {group: lock file text} for both images."""
    facade_pins = resolve([f"--group={PYPROJECT}:facade"], index_url)
    torch_reqs, torch_full_version = torch_requirements(torch_version, torch_index_url, wheels_dir)
    handler_pins = resolve([f"--group={PYPROJECT}:handler", *torch_reqs], index_url)
    handler_pins = [pin for pin in handler_pins if pin[0] != "torch"]
    torch_notes = [
        f"torch=={torch_version} itself is not here: its CPU wheel comes from the PyTorch CPU index or",
        "wheels/ (PyPI's torch is the multi-GB CUDA build), and the Dockerfile installs it first with",
        "--no-deps, pinned by version, and refuses a CUDA build. Its own dependencies are here, resolved",
        f"from torch {torch_full_version}'s metadata:",
        *(f"  {req}" for req in torch_reqs),
    ]
    return {
        "facade": render("facade", facade_pins, []),
        "handler": render("handler", handler_pins, torch_notes),
    }


def main(argv=None):
    """Command-line entry point: write (or with --check compare) both lock files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 if a lock file would change")
    parser.add_argument("--index-url", default=os.environ.get("LOCK_INDEX_URL") or DEFAULT_INDEX_URL)
    parser.add_argument("--torch-version", default=os.environ.get("TORCH_VERSION") or DEFAULT_TORCH_VERSION)
    parser.add_argument(
        "--torch-index-url",
        default=os.environ.get("TORCH_INDEX_URL", DEFAULT_TORCH_INDEX_URL),
        help="where torch's metadata comes from when wheels/ has no torch wheel (empty: pip's own sources)",
    )
    args = parser.parse_args(argv)
    try:
        check_interpreter()
        check_pip()
        texts = lock_texts(args.index_url, args.torch_version, args.torch_index_url, PROJECT_DIR / "wheels")
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stale = []
    for group, text in texts.items():
        path = LOCKS[group]
        current = path.read_text() if path.is_file() else None
        if current == text:
            print(f"{path.relative_to(PROJECT_DIR)} is up to date ({text.count('--hash=')} distributions).")
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(PROJECT_DIR)} ({text.count('--hash=')} distributions).")
    if args.check and stale:
        print(f"out of date: {', '.join(str(p.relative_to(PROJECT_DIR)) for p in stale)}; run `make lock`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
