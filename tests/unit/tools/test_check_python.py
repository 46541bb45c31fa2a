"""Which Python `make install` takes and accepts: the Makefile's choice and tools/check_python.py.

The choice is tested with real interpreters on a PATH that holds nothing else, so a host's own
python3.11 cannot hide a wrong choice.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_DIR
from tools.check_python import supported_range, version_problem

PYPROJECT_TEXT = (PROJECT_DIR / "pyproject.toml").read_text()


def interpreter(minor):
    """Return the file of a real python3.<minor> on this host (pyenv's too), or skip saying it is missing."""
    name = f"python3.{minor}"
    candidates = [[name], ["python3"]]
    if shutil.which("pyenv"):
        # pyenv's shims answer only for the versions selected; select them all to find this one.
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False)
        located = subprocess.run(
            ["pyenv", "which", name],
            env={**os.environ, "PYENV_VERSION": ":".join(versions.stdout.split())},
            capture_output=True,
            text=True,
            check=False,
        )
        candidates.insert(0, [located.stdout.strip()] if located.returncode == 0 else [name])
    for command in candidates:
        if not command[0] or shutil.which(command[0]) is None:
            continue
        result = subprocess.run(
            [*command, "-c", "import sys; print(sys.version_info.minor, sys.executable)"],
            capture_output=True,
            text=True,
            check=False,
        )
        found_minor, _, executable = result.stdout.strip().partition(" ")
        if result.returncode == 0 and found_minor == str(minor):
            return executable
    pytest.skip(f"no {name} on this host")


def chosen_python(tmp_path, **names):
    """Return what `make which-python` prints with a PATH that holds only `names` -> interpreters."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in names.items():
        (bin_dir / name).symlink_to(target)
    result = subprocess.run(
        [shutil.which("make"), "--no-print-directory", "-s", "which-python"],
        cwd=PROJECT_DIR,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_supported_range_is_read_from_requires_python():
    assert supported_range('[project]\nrequires-python = ">=3.11,<3.14"\n') == ((3, 11), (3, 14))


def test_the_projects_range_covers_the_pythons_of_debian_12_ubuntu_24_04_and_debian_13():
    supported = supported_range(PYPROJECT_TEXT)
    for version in ((3, 11), (3, 12), (3, 13)):
        assert version_problem(version, supported) is None


@pytest.mark.parametrize("version", [(3, 10), (3, 14), (2, 7)])
def test_a_python_outside_the_range_is_refused_with_the_versions_that_work(version):
    problem = version_problem(version, ((3, 11), (3, 14)))
    assert f"Python {version[0]}.{version[1]} is not supported" in problem
    assert "3.11 to 3.13" in problem
    assert "PYTHON=" in problem


def test_an_unexpected_requires_python_form_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="not of the form"):
        supported_range('[project]\nrequires-python = "~=3.11"\n')


def test_the_running_interpreter_passes_the_check_as_make_install_runs_it():
    result = subprocess.run(
        [sys.executable, "-m", "tools.check_python"], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_make_prefers_python3_11_when_the_host_has_it(tmp_path):
    python311 = interpreter(11)
    python312 = interpreter(12)
    assert chosen_python(tmp_path, python3=python312, **{"python3.11": python311}).startswith(
        f"{tmp_path}/bin/python3.11: Python 3.11."
    )


@pytest.mark.parametrize("minor", [12, 13])
def test_make_takes_the_hosts_python3_where_there_is_no_python3_11(tmp_path, minor):
    assert chosen_python(tmp_path, python3=interpreter(minor)).startswith(f"python3: Python 3.{minor}.")
