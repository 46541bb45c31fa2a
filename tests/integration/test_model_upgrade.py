"""`python -m tools.model_upgrade` on a whole native stack: a checked upgrade and a rollback under
steady load through nginx, a refused candidate, and a management API that registers only the store's
archives. The candidate that passes is the served model packed for the other runtime (another
archive version, the same answers); the one that fails is the tiny random model.
"""

import json
import subprocess
import sys
import zipfile

import pytest
import requests

from stack.models import SST2_DEV
from stack.private import build_archive
from tests.conftest import PROJECT_DIR
from tests.integration.conftest import started_stack, stop_stack
from tests.load import steady_load
from tools import management

from sentiment_info import BUILD_INFO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STARTED = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory, standin_model_dir):
    settings = started_stack(tmp_path_factory.mktemp("upgrade-stack"), standin_model_dir, STARTED)
    yield settings
    stop_stack(settings, STARTED)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory, standin_model_dir, tiny_model_dir):
    """Archives to upgrade to: {"same": the served model on the torch runtime, "random": the tiny model}."""
    work = tmp_path_factory.mktemp("candidates")
    return {
        "same": build_archive(standin_model_dir, work / "same", RUNTIME="torch"),
        "random": build_archive(tiny_model_dir, work / "random"),
    }


def version_of(archive):
    return json.loads(zipfile.ZipFile(archive).read(BUILD_INFO))["archive_version"]


def model_upgrade(stack, *arguments):
    """Run the tool against the stack's TorchServe as an operator would; return the finished process."""
    torchserve = stack.torchserve
    command = [
        *(sys.executable, "-m", "tools.model_upgrade"),
        *("--management-url", torchserve.management_url, "--inference-url", torchserve.inference_url),
        *("--store", str(torchserve.model_store), "--drain-s", "3", "--timeout", "120", *arguments),
    ]
    return subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)


def registered_versions(stack):
    response = management.request(stack.torchserve.management_url, "GET", "/models/sentiment/all", timeout=10)
    return sorted(description["modelVersion"] for description in response.json())


def test_an_upgrade_then_a_rollback_under_load_lose_no_request(stack, candidates, capsys):
    old, new = registered_versions(stack)[0], version_of(candidates["same"])
    labelled = ["--labelled", str(SST2_DEV), "--sample", "100"] if SST2_DEV.is_file() else []

    with steady_load(stack.url) as upgrade_load:
        upgraded = model_upgrade(stack, "upgrade", "--archive", str(candidates["same"]), *labelled)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert registered_versions(stack) == [new]
    assert version_of(stack.torchserve.model_store / "sentiment.mar") == new  # what a restart loads
    after = requests.post(stack.url, json={"text": "fine"}, timeout=30)
    assert after.headers["X-Model-Version"] == new

    with steady_load(stack.url) as rollback_load:
        rolled_back = model_upgrade(stack, "rollback")
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    assert registered_versions(stack) == [old]
    assert version_of(stack.torchserve.model_store / "sentiment.mar") == old

    with capsys.disabled():
        for step, load in (("upgrade", upgrade_load), ("rollback", rollback_load)):
            print(f"\n  {step}: {load.summary()}")
        print(upgraded.stdout + rolled_back.stdout)
    for load in (upgrade_load, rollback_load):
        assert load.failures == []
        assert load.sent >= 4
        assert load.versions <= {old, new}


def test_a_candidate_that_fails_the_check_is_removed_and_the_old_version_stays(stack, candidates):
    before = registered_versions(stack)
    default_archive = (stack.torchserve.model_store / "sentiment.mar").read_bytes()

    refused = model_upgrade(stack, "upgrade", "--archive", str(candidates["random"]), "--min-agreement", "0.99")

    assert refused.returncode == 1
    assert "check failed" in refused.stderr and "--min-agreement 0.99" in refused.stderr
    assert f"{before[0]} stays the default" in refused.stderr
    assert registered_versions(stack) == before
    assert (stack.torchserve.model_store / "sentiment.mar").read_bytes() == default_archive
    assert not (stack.torchserve.model_store / f"sentiment-{version_of(candidates['random'])}.mar").exists()


def test_a_candidate_that_is_not_ready_in_time_is_removed(stack, candidates):
    before = registered_versions(stack)

    timed_out = model_upgrade(stack, "upgrade", "--archive", str(candidates["random"]), "--timeout", "0")

    assert timed_out.returncode == 1
    assert "READY workers within" in timed_out.stderr or "ran out of time" in timed_out.stderr
    assert registered_versions(stack) == before


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("file:///tmp/model-store/foreign.mar", "does not match any allowed URL"),
        ("http://127.0.0.1:9/model-store/foreign.mar", "does not match any allowed URL"),
        ("../model-store/sentiment.mar", "Relative path is not allowed"),
        ("foreign.mar", "not found"),
    ],
)
def test_the_management_api_registers_only_archives_already_in_the_store(stack, url, refusal):
    response = management.request(stack.torchserve.management_url, "POST", "/models", params={"url": url}, timeout=30)
    assert response.status_code == 404, response.text
    assert refusal.lower() in response.json()["message"].lower()


def defaults_and_versions(replica):
    """Return (default version, sorted registered versions) of one TorchServe."""
    default = management.request(replica.management_url, "GET", "/models/sentiment", timeout=10).json()[0]
    every = management.request(replica.management_url, "GET", "/models/sentiment/all", timeout=10).json()
    return default["modelVersion"], sorted(description["modelVersion"] for description in every)


def test_every_replica_switches_together_and_a_refused_candidate_leaves_every_one_as_it_was(
    two_torchserves, candidates
):
    replicas = [settings for settings, _ in two_torchserves]
    pairs = [
        option
        for settings in replicas
        for option in ("--management-url", settings.management_url, "--inference-url", settings.inference_url)
    ]
    tool = [sys.executable, "-m", "tools.model_upgrade", *pairs, "--store", str(replicas[0].model_store)]
    tool += ["--drain-s", "1", "--timeout", "120"]
    old = defaults_and_versions(replicas[0])[0]
    new = version_of(candidates["same"])

    def run(*arguments):
        return subprocess.run([*tool, *arguments], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)

    refused = run("upgrade", "--archive", str(candidates["random"]), "--min-agreement", "0.99")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert [defaults_and_versions(replica) for replica in replicas] == [(old, [old])] * 2

    upgraded = run("upgrade", "--archive", str(candidates["same"]))
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert upgraded.stdout.count("READY; checking") == 2
    assert [defaults_and_versions(replica) for replica in replicas] == [(new, [new])] * 2

    rolled_back = run("rollback")
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    assert [defaults_and_versions(replica) for replica in replicas] == [(old, [old])] * 2
