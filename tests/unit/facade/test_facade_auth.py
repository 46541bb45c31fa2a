"""API keys: off by default; with a key file, the classification routes need a Bearer key."""

import subprocess
import sys
from dataclasses import replace

import pytest

from facade import create_app
from facade.auth import ApiKeysError, is_known, key_hash, read_key_hashes

KEY = "k3y-for-tests_0123456789abcdefghijklmnopqrstu"
OTHER_KEY = "another-key-that-was-never-stored-0123456789"


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(f"# the test key\n{key_hash(KEY)}\n\n{key_hash('second')}\n")
    return path


@pytest.fixture
def keyed(settings, predictor, keys_file):
    return create_app(replace(settings, api_keys_file=str(keys_file)), predictor).test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_file_nothing_needs_a_key(client):
    assert client.post("/", json={"text": "good"}).status_code == 200


@pytest.mark.parametrize("headers", [{}, bearer(OTHER_KEY), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}])
def test_classify_without_a_known_bearer_key_is_the_json_401(keyed, predictor, headers):
    for path, body in (("/", {"text": "good"}), ("/predict", {"inputs": "good"})):
        response = keyed.post(path, json=body, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="sentiment"'
    assert predictor.calls == []


def test_a_stored_key_classifies(keyed):
    assert keyed.post("/", json={"text": "good"}, headers=bearer(KEY)).status_code == 200
    assert keyed.post("/", json={"text": "good"}, headers={"Authorization": "bearer second"}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/info", "/openapi.json", "/docs", "/"])
def test_health_readiness_metrics_and_the_pages_stay_open(keyed, path):
    assert keyed.get(path).status_code == 200


def test_the_page_asks_for_the_key_and_its_form_sends_it(keyed):
    page = keyed.get("/").get_data(as_text=True)
    assert 'name="api_key"' in page and 'type="password"' in page
    refused = keyed.post("/", data={"text": "good"})
    assert refused.status_code == 401 and "API key" in refused.get_data(as_text=True)
    assert keyed.post("/", data={"text": "good", "api_key": KEY}).status_code == 200


def test_the_page_has_no_key_field_when_keys_are_off(client):
    assert 'name="api_key"' not in client.get("/").get_data(as_text=True)


def test_the_document_declares_the_bearer_scheme_on_the_classification_routes(keyed, client):
    spec = keyed.get("/openapi.json").get_json()
    for path in ("/", "/predict"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"apiKey": []}]
        assert "401" in operation["responses"]
    assert spec["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert "security" not in client.get("/openapi.json").get_json()["paths"]["/"]["post"]


def test_only_hashes_are_stored_and_every_one_is_compared(keys_file):
    digests = read_key_hashes(str(keys_file))
    assert KEY.encode() not in keys_file.read_bytes()
    assert is_known(KEY, digests) and is_known("second", digests)
    assert not is_known(OTHER_KEY, digests)


@pytest.mark.parametrize(("text", "words"), [(KEY + "\n", "line 1"), ("# nothing\n", "no key hash")])
def test_a_key_file_that_is_not_hashes_stops_the_start(settings, predictor, tmp_path, text, words):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ApiKeysError, match=words):
        create_app(replace(settings, api_keys_file=str(path)), predictor)


def test_a_missing_key_file_stops_the_start(settings, predictor, tmp_path):
    with pytest.raises(ApiKeysError, match="cannot be read"):
        create_app(replace(settings, api_keys_file=str(tmp_path / "absent")), predictor)


def test_the_module_prints_a_new_key_and_its_line():
    printed = subprocess.run(
        [sys.executable, "-m", "facade.auth"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    key = printed.split("key:", 1)[1].split()[0]
    assert f"line: {key_hash(key)}" in printed
    assert len(key) >= 40
