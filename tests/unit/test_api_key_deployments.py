"""Every deployment's way to give the facade its API key file points the facade at the mounted secret."""

import yaml

from tests.conftest import PROJECT_DIR


def app_service(path):
    return yaml.safe_load(path.read_text())["services"]["app"]


def test_compose_mounts_the_secret_where_the_facade_reads_it():
    app = app_service(PROJECT_DIR / "deploy" / "compose-api-keys.yml")
    assert app["environment"]["FACADE_API_KEYS_FILE"] == "/run/secrets/" + app["secrets"][0]


def test_swarm_mounts_the_secret_where_the_facade_reads_it():
    app = app_service(PROJECT_DIR / "deploy" / "swarm" / "api-keys.yml")
    assert app["environment"]["FACADE_API_KEYS_FILE"] == "/run/secrets/" + app["secrets"][0]["target"]
