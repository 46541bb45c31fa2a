"""Write the images' lock files from pyproject.toml's dependency groups: `make lock`.

    facade/requirements.lock   <- [dependency-groups] facade   (the sentiment-facade image)
    tools/requirements.lock    <- [dependency-groups] handler  (the sentiment-torchserve image)
                                  plus torch's own dependencies, but not torch

The resolver is uv's (`uv pip compile`, pinned in pyproject.toml's dev group), run once per image
platform in PLATFORMS (linux/amd64 and linux/arm64: CPython 3.11 on glibc 2.36, i.e. Debian
bookworm as in python:3.11-slim-bookworm; wheels only; PyPI), with no uv configuration, so nothing installed
here and no local index or wheelhouse can leak into a lock. Both platforms must resolve to the
same versions. Each pin then carries the sha256 of every wheel that either platform may install,
and a comment under it names each of those files: a reader, and tests/unit/test_docker_files.py,
can see which file serves which platform. The Dockerfile installs a lock with
`pip install --require-hashes --no-deps -r <lock>` and then runs `pip check`, so an image gets
exactly these files, on either platform, or the build fails; after writing the locks, this script
checks that with pip itself (a dry run of that install for each platform).

torch is not in the handler lock: its CPU wheel comes from the PyTorch CPU index or the build
context's wheels/, not from PyPI (whose torch is the multi-GB CUDA build), and the Dockerfile
pins it by version and refuses a CUDA build. Its dependencies (sympy, networkx, jinja2, ...) come
from PyPI like everything else, so they are resolved here from torch's own metadata: the wheel in
wheels/ when there is one, else TORCH_INDEX_URL (empty: pip's own configured sources).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT_DIR / "pyproject.toml"
LOCKS = {
    "facade": PROJECT_DIR / "facade" / "requirements.lock",
    "handler": PROJECT_DIR / "tools" / "requirements.lock",
}
IMAGES = {"facade": "sentiment-facade", "handler": "sentiment-torchserve"}
DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_TORCH_VERSION = "2.13.0"
DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
PYTHON_VERSION = "3.11"
# The images' platforms (Docker's name -> machine), on glibc 2.36: Debian bookworm's, the base of
# python:3.11-slim-bookworm.
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
GLIBC_MINOR = 36
# Distributions that only a CUDA build of torch depends on.
CUDA_ONLY = re.compile(r"^(nvidia-|triton\b|cuda-)", re.IGNORECASE)


class LockError(Exception):
    """Something a person must fix; the message says what."""


def normalize(name):
    """Return the PEP 503 normalized form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def uv_command():
    """Return the uv executable: the one beside this interpreter (the venv's), else the first on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        raise LockError("uv is not installed: run `make install-dev` (pyproject.toml's dev group pins it)")
    return found


def clean_env(prefix):
    """Return this environment without the variables that configure a tool (PIP_*, UV_*)."""
    return {key: value for key, value in os.environ.items() if not key.startswith(prefix)}


def pip_env():
    """Return an environment for pip without any pip configuration (files or PIP_* variables)."""
    env = clean_env("PIP_")
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def run_pip(args, *, isolated=True):
    """Run `python -m pip <args>`; raise LockError with pip's output when it fails."""
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(
        command, cwd=PROJECT_DIR, env=pip_env() if isolated else None, capture_output=True, text=True, check=False
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
    """Return torch's own (non-extra) requirements and the full version its metadata names."""
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


def uv_platform(machine):
    """Return uv's --python-platform for one of the images' machines."""
    return f"{machine}-manylinux_2_{GLIBC_MINOR}"


def manylinux_tags(machine):
    """Return every manylinux platform tag a glibc 2.GLIBC_MINOR system installs on `machine`, best first."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(GLIBC_MINOR, 4, -1):
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{machine}")
    return tags


def compile_for(group, extra_requirements, platform, index_url):
    """Return {name: (version, {sha256: wheel file name})} that uv resolves a group to on one platform."""
    with tempfile.TemporaryDirectory(prefix="lock-") as temp:
        extra = Path(temp) / "extra.in"
        extra.write_text("".join(f"{req}\n" for req in extra_requirements))
        output = Path(temp) / "pylock.toml"
        command = [
            uv_command(), "pip", "compile", str(extra), f"--group={PYPROJECT}:{group}",
            "--no-config", "--quiet", "--format=pylock.toml", f"--output-file={output}",
            f"--python-version={PYTHON_VERSION}", f"--python-platform={platform}",
            "--only-binary=:all:", f"--index-url={index_url}",
        ]  # fmt: skip
        env = clean_env("UV_")
        if "UV_CACHE_DIR" in os.environ:
            env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
        result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LockError(f"uv could not resolve `{group}` for {platform}:\n{result.stderr[-3000:]}")
        packages = tomllib.loads(output.read_text())["packages"]
    resolved = {}
    for package in packages:
        files = {}
        for wheel in package.get("wheels", []):
            files[wheel["hashes"]["sha256"]] = unquote(Path(urlparse(wheel["url"]).path).name)
        if not files:
            raise LockError(f"{package['name']}=={package['version']} has no wheel for {platform} on {index_url}")
        resolved[normalize(package["name"])] = (package["version"], files)
    return resolved


def resolve(group, extra_requirements, index_url):
    """Return {name: (version, {sha256: file name})}: one version per package, wheels of every platform."""
    per_platform = {
        docker: compile_for(group, extra_requirements, uv_platform(machine), index_url)
        for docker, machine in PLATFORMS.items()
    }
    versions = {docker: {name: pin[0] for name, pin in pins.items()} for docker, pins in per_platform.items()}
    (first, first_versions), *others = versions.items()
    for other, other_versions in others:
        if other_versions != first_versions:
            differ = sorted(set(first_versions.items()) ^ set(other_versions.items()))
            raise LockError(
                f"`{group}` resolves differently on {first} and {other}: {differ}; "
                "pin the differing packages in pyproject.toml so that both platforms share one version"
            )
    merged = {}
    for pins in per_platform.values():
        for name, (version, files) in pins.items():
            merged.setdefault(name, (version, {}))[1].update(files)
    return dict(sorted(merged.items()))


def render(group, pins, notes):
    """Return the text of one lock file."""
    lock = LOCKS[group].relative_to(PROJECT_DIR)
    platforms = ", ".join(f"{docker} ({uv_platform(machine)})" for docker, machine in PLATFORMS.items())
    header = [
        f"# {lock}: every Python dependency of the {IMAGES[group]} image, pinned with its hashes.",
        f"# Generated by devtools/lock.py (uv pip compile) from pyproject.toml's dependency group `{group}`;",
        "# do not edit. Regenerate after changing pyproject.toml: make lock.",
        f"# Platforms: {platforms}; CPython {PYTHON_VERSION}; wheels only; files from PyPI.",
        "# Each pin has the sha256 of every wheel either platform may install; the comment under it names them.",
        f"# The Dockerfile installs it with: pip install --require-hashes --no-deps -r {lock} && pip check",
        *(f"# {line}" for line in notes),
    ]
    body = []
    for name, (version, files) in pins.items():
        ordered = sorted(files.items(), key=lambda item: item[1])
        hashes = [f"    --hash=sha256:{digest}" for digest, _ in ordered]
        body += [f"{name}=={version} \\", " \\\n".join(hashes)]
        body += [f"    # {file} sha256:{digest}" for digest, file in ordered]
    return "\n".join([*header, *body]) + "\n"


def check_installable(path, machine, index_url):
    """Raise LockError unless pip installs the lock on `machine` as the Dockerfile does (a dry run).

    pip resolves for the image's platform (CPython 3.11, glibc 2.36, `machine`) from the index,
    picks a wheel for every pin and checks it against the pin's hashes (--require-hashes), without
    installing anything: a lock that names no usable wheel for the platform fails here.
    """
    platforms = [arg for tag in manylinux_tags(machine) for arg in ("--platform", tag)]
    with tempfile.TemporaryDirectory(prefix="lock-") as temp:
        run_pip([
            "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet", "--target", temp,
            "--index-url", index_url, *platforms, "--implementation", "cp", "--python-version", PYTHON_VERSION,
            "--abi", f"cp{PYTHON_VERSION.replace('.', '')}", "--abi", "abi3", "--abi", "none",
            "--only-binary=:all:", "--require-hashes", "--no-deps", "-r", str(path),
        ])  # fmt: skip


def lock_texts(index_url, torch_version, torch_index_url, wheels_dir):
    """Return {group: lock file text} for both images."""
    facade_pins = resolve("facade", [], index_url)
    torch_reqs, torch_full_version = torch_requirements(torch_version, torch_index_url, wheels_dir)
    handler_pins = resolve("handler", torch_reqs, index_url)
    if "torch" in handler_pins:
        raise LockError(f"a handler dependency needs torch ({handler_pins['torch'][0]}), which is installed apart")
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
        texts = lock_texts(args.index_url, args.torch_version, args.torch_index_url, PROJECT_DIR / "wheels")
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stale = []
    for group, text in texts.items():
        path = LOCKS[group]
        current = path.read_text() if path.is_file() else None
        pins = len(re.findall(r"^\S+==", text, re.MULTILINE))
        if current == text:
            print(f"{path.relative_to(PROJECT_DIR)} is up to date ({pins} packages).")
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(PROJECT_DIR)} ({pins} packages, {text.count('--hash=')} wheels).")
    if args.check and stale:
        print(f"out of date: {', '.join(str(p.relative_to(PROJECT_DIR)) for p in stale)}; run `make lock`")
        return 1
    try:
        for path in LOCKS.values():
            for docker, machine in PLATFORMS.items():
                check_installable(path, machine, args.index_url)
                print(f"{path.relative_to(PROJECT_DIR)}: pip installs it on {docker} (dry run, hashes checked).")
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
