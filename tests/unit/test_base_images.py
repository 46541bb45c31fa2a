"""The local base-image stand-ins agree with the Dockerfile's default base images: no engine, seconds.

The Dockerfile's global ARG defaults name the official base images with their Debian suite
(python:3.11-slim-bookworm, debian:bookworm-slim). .ci/build-base-images.sh reads them and makes a
stand-in of each from that suite's apt; its APT_PYTHON3 table says which python3 each suite's apt
has. CI builds on the stand-ins, so a stand-in of another suite or Python than the default would
let CI prove something users never run.
"""

import re
import shutil
import subprocess

import pytest

from tests.conftest import PROJECT_DIR
from tests.docker.conftest import BASE_IMAGES_SCRIPT, standin_bases

DOCKERFILE = PROJECT_DIR / "Dockerfile"
# python:3.11-slim-bookworm, sentiment-local/python:3.11-slim-bookworm-arm64, ...@sha256:...
PYTHON_TAG = re.compile(r"^(?:[\w.-]+/)?python:(\d+\.\d+)-slim-([a-z]+?)(?:-(?:amd64|arm64))?(?:@\S+)?$")
DEBIAN_TAG = re.compile(r"^(?:[\w.-]+/)?debian:([a-z]+)-slim(?:-(?:amd64|arm64))?(?:@\S+)?$")


def dockerfile_bases(dockerfile_text):
    """Return {build argument: default} of the Dockerfile's global ARGs (before the first FROM)."""
    head = dockerfile_text.split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(\S+)\s*$", head, re.MULTILINE))


def apt_python3(script_text):
    """Return {Debian suite: python3 minor version} from the script's APT_PYTHON3 table."""
    table = re.search(r"^declare -A APT_PYTHON3=\((.*)\)$", script_text, re.MULTILINE).group(1)
    return dict(re.findall(r"\[(\w+)\]=(\d+\.\d+)", table))


def suite_and_python(bases):
    """Return (suites of both images, Python minor of PYTHON_IMAGE), None where a tag names none."""
    python = PYTHON_TAG.match(bases.get("PYTHON_IMAGE", ""))
    debian = DEBIAN_TAG.match(bases.get("DEBIAN_IMAGE", ""))
    suites = (python.group(2) if python else None, debian.group(1) if debian else None)
    return suites, python.group(1) if python else None


def disagreements(dockerfile_text, script_text, standins):
    """Return what keeps the stand-ins from matching the Dockerfile's defaults ([] when they match)."""
    problems = []
    (suite, debian_suite), python = suite_and_python(dockerfile_bases(dockerfile_text))
    if None in (suite, debian_suite, python):
        return [f"a default base image names no Debian suite or Python: {dockerfile_bases(dockerfile_text)}"]
    if suite != debian_suite:
        problems.append(f"the defaults are of two suites: {suite} and {debian_suite}")
    apt = apt_python3(script_text).get(suite)
    if apt != python:
        problems.append(f"the default wants Python {python} on {suite}, whose apt python3 is {apt}")
    (standin_suite, standin_debian_suite), standin_python = suite_and_python(standins)
    if (standin_suite, standin_debian_suite) != (suite, debian_suite):
        problems.append(f"stand-ins of {standin_suite}/{standin_debian_suite} for defaults of {suite}/{debian_suite}")
    if standin_python != python:
        problems.append(f"a Python {standin_python} stand-in for a Python {python} default")
    return problems


def test_the_stand_ins_have_the_suite_and_python_of_the_dockerfiles_defaults():
    script = BASE_IMAGES_SCRIPT.read_text()
    for arch in ("amd64", "arm64"):
        assert disagreements(DOCKERFILE.read_text(), script, standin_bases(arch)) == []


def test_a_default_python_that_the_suites_apt_lacks_is_caught():
    # trixie's apt has Python 3.13 only: no stand-in can have 3.11 (a trixie stand-in would need a
    # source-built Python).
    trixie = DOCKERFILE.read_text().replace("bookworm", "trixie")
    problems = disagreements(trixie, BASE_IMAGES_SCRIPT.read_text(), standin_bases())
    assert "the default wants Python 3.11 on trixie, whose apt python3 is 3.13" in problems
    assert "stand-ins of bookworm/bookworm for defaults of trixie/trixie" in problems


def test_a_stand_in_of_another_python_or_a_suite_less_default_is_caught():
    dockerfile, script = DOCKERFILE.read_text(), BASE_IMAGES_SCRIPT.read_text()
    other_python = {**standin_bases(), "PYTHON_IMAGE": "sentiment-local/python:3.12-slim-bookworm"}
    assert disagreements(dockerfile, script, other_python) == ["a Python 3.12 stand-in for a Python 3.11 default"]
    suite_less = dockerfile.replace("slim-bookworm", "slim")  # python:<version>-slim, whatever Hub makes it
    problems = disagreements(suite_less, script, standin_bases())
    assert problems[0].startswith("a default base image names no Debian suite")


def test_the_stand_ins_are_the_official_tags_in_the_projects_namespace():
    official = dockerfile_bases(DOCKERFILE.read_text())
    assert standin_bases("amd64") == {arg: f"sentiment-local/{tag}" for arg, tag in official.items()}
    assert standin_bases("arm64") == {arg: f"sentiment-local/{tag}-arm64" for arg, tag in official.items()}


def test_make_builds_on_the_stand_ins_the_script_names():
    if not shutil.which("make"):
        pytest.skip("needs make")
    printed = subprocess.run(
        ["make", "-s", "-n", "docker-down", "OFFLINE_BASES=1"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for arg, tag in standin_bases().items():
        assert f"{arg}={tag} " in printed


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("bookworm", "trixie"), "python:3.11-slim-trixie wants Python 3.11, but Debian trixie's apt has python3 3.13"),
        (("slim-bookworm", "slim"), "is not python:<major.minor>-slim-<suite>"),
        (("debian:bookworm-slim", "debian:trixie-slim"), "of two suites"),
    ],
)
def test_the_script_refuses_defaults_it_cannot_stand_in_for(tmp_path, edit, message):
    # The script reads the Dockerfile next to its own folder: run a copy beside an edited one.
    (tmp_path / ".ci").mkdir()
    shutil.copy(BASE_IMAGES_SCRIPT, tmp_path / ".ci" / BASE_IMAGES_SCRIPT.name)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.read_text().replace(*edit))
    result = subprocess.run(
        ["bash", str(tmp_path / ".ci" / BASE_IMAGES_SCRIPT.name), "--print-tags"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr
