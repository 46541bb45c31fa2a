"""The distributions' own Pythons can install what `make install` and `make install-dev` install.

Debian 12 ships Python 3.11, Ubuntu 24.04 3.12 and Debian 13 3.13; the native path makes .venv with
the host's python3 (the Makefile, tools/check_python.py). Installing torch for 3.12 or 3.13 here
would download a multi-GB CUDA build, so this resolves instead: uv finds wheels of every pinned
package, and of torch, for each supported Python on linux x86_64 and aarch64, from PyPI (the CPU
wheel index carries the same torch versions). A pin without a wheel for one of them fails here
before it fails a user's `make install`.
"""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import PROJECT_DIR
from tools.check_python import supported_range

pytestmark = pytest.mark.integration

PYPROJECT = PROJECT_DIR / "pyproject.toml"
# The groups installed together: into .venv (`make install`, `make install-dev`, `make bench`), and
# into checkov's own venv.
VENVS = {".venv": ("handler", "facade", "dev", "bench"), ".venv/checkov": ("policy",)}
PLATFORMS = ("x86_64-manylinux_2_28", "aarch64-manylinux_2_28")
TORCH_VERSION = re.search(r"^TORCH_VERSION \?= (\S+)$", (PROJECT_DIR / "Makefile").read_text(), re.MULTILINE).group(1)


def supported_pythons():
    """Return "3.X" for every minor version pyproject.toml's requires-python allows."""
    (major, low), (_, high) = supported_range(PYPROJECT.read_text())
    return [f"{major}.{minor}" for minor in range(low, high)]


def uv_resolution(python, platform, groups, tmp_path):
    """Run `uv pip compile` of groups installed together (plus torch), wheels only; return the result."""
    extra = tmp_path / "extra.in"
    extra.write_text(f"torch=={TORCH_VERSION}\n" if "handler" in groups else "")
    return subprocess.run(
        [
            f"{sys.prefix}/bin/uv",
            "pip",
            "compile",
            str(extra),
            *(f"--group={PYPROJECT}:{group}" for group in groups),
            "--no-config",
            "--quiet",
            f"--python-version={python}",
            f"--python-platform={platform}",
            "--only-binary=:all:",
            "--index-url=https://pypi.org/simple",
            f"--output-file={tmp_path / 'out.txt'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_supported_pythons_are_those_of_debian_12_ubuntu_24_04_and_debian_13():
    assert supported_pythons() == ["3.11", "3.12", "3.13"]


def test_every_venv_resolves_to_wheels_for_each_supported_python_and_platform(tmp_path):
    cases = [
        (python, platform, venv, groups)
        for python in supported_pythons()
        for platform in PLATFORMS
        for venv, groups in VENVS.items()
    ]

    def failure(case, index):
        python, platform, venv, groups = case
        work = tmp_path / str(index)
        work.mkdir()
        result = uv_resolution(python, platform, groups, work)
        return None if result.returncode == 0 else f"{venv}, Python {python}, {platform}: {result.stderr[-1500:]}"

    # Each resolution mostly waits on the index: side by side they take about as long as one.
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        failures = [found for found in pool.map(failure, cases, range(len(cases))) if found]
    assert failures == []
