"""API keys through nginx -> facade -> TorchServe: a stack of its own started with a key file."""

import pytest
import requests

from tests.integration.conftest import API_KEY as KEY

pytestmark = pytest.mark.integration


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_classification_needs_the_key_and_health_does_not(keyed_stack):
    url = keyed_stack.url
    refused = requests.post(url, json={"text": "It is worth it"}, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.post(
        url + "predict", json={"inputs": "fine"}, headers={"Authorization": "Bearer nope"}, timeout=30
    )
    assert wrong.status_code == 401

    answered = requests.post(
        url, json={"text": "It is worth it"}, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert answered.status_code == 200 and answered.json()["label"] in ("POSITIVE", "NEGATIVE")
    for path in ("healthz", "readyz", "info", "openapi.json", "docs"):
        assert requests.get(url + path, timeout=30).status_code == 200


def test_the_page_form_works_with_the_key(keyed_stack):
    page = requests.get(keyed_stack.url, timeout=30).text
    assert 'name="api_key"' in page
    answered = requests.post(keyed_stack.url, data={"text": "It is worth it", "api_key": KEY}, timeout=30)
    assert answered.status_code == 200 and 'id="result-label"' in answered.text
