"""A model upgrade and a rollback on the Compose stack under steady load through nginx.

The tool runs as `make docker-model-upgrade` runs it (deploy/switch-model.sh): its
management steps in each TorchServe container (docker exec, over the management API's socket),
its store steps in a one-shot container of the `upgrade` service, which writes the model store. The
candidate is the served model packed for the torch runtime: another archive version with the same
answers.
"""

import json
import zipfile

import pytest

from stack.private import build_archive
from tests.docker.conftest import run
from tests.load import steady_load

from sentiment_info import BUILD_INFO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OPTIONS = ("--drain-s", "5", "--timeout", "240")


def default_version(stack):
    status, body = stack.management("GET", "/models/sentiment")
    assert status == 200, body
    return json.loads(body)[0]["modelVersion"]


def registered_versions(stack):
    status, body = stack.management("GET", "/models/sentiment/all")
    assert status == 200, body
    return sorted(description["modelVersion"] for description in json.loads(body))


def run_tool(stack, command, *arguments, candidate_dir=None):
    env = {**stack.env, "COMPOSE": " ".join([*stack.compose, "-p", stack.project])}
    if candidate_dir:
        env["CANDIDATE_DIR"] = str(candidate_dir)
    return run(["bash", "deploy/switch-model.sh", command, *OPTIONS, *arguments], timeout=900, env=env)


def test_an_upgrade_and_a_rollback_under_load_lose_no_request(stack, standin_model_dir, tmp_path_factory, capsys):
    candidate_dir = tmp_path_factory.mktemp("candidate")
    candidate = build_archive(standin_model_dir, candidate_dir, RUNTIME="torch")
    candidate_dir.chmod(0o755)  # read by the container's user (10001)
    candidate.chmod(0o644)
    new = json.loads(zipfile.ZipFile(candidate).read(BUILD_INFO))["archive_version"]
    old = default_version(stack)

    with steady_load(f"{stack.url}/") as upgrade_load:
        upgraded = run_tool(stack, "upgrade", "--archive", "/candidate/sentiment.mar", candidate_dir=candidate_dir)
    assert (default_version(stack), registered_versions(stack)) == (new, [new])

    with steady_load(f"{stack.url}/") as rollback_load:
        rolled_back = run_tool(stack, "rollback")
    assert (default_version(stack), registered_versions(stack)) == (old, [old])

    with capsys.disabled():
        print(f"\n  Compose upgrade: {upgrade_load.summary()}\n  Compose rollback: {rollback_load.summary()}")
        print(upgraded.stdout + rolled_back.stdout)
    for load in (upgrade_load, rollback_load):
        assert load.failures == []
        assert load.versions <= {old, new}
