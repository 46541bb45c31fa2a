"""The clients people already have, through nginx -> facade -> TorchServe: huggingface_hub's
InferenceClient (base_url, and model=<url of a route>) and text-embeddings-inference's /predict."""

import pytest
import requests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inference_client():
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub comes with transformers (handler group)")
    return hub.InferenceClient


def assert_every_label_best_first(elements):
    labels = [element.label for element in elements]
    scores = [element.score for element in elements]
    assert sorted(labels) == ["NEGATIVE", "POSITIVE"]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0)


def test_inference_client_with_base_url_classifies(shared_stack, inference_client):
    client = inference_client(base_url=shared_stack.url)
    elements = client.text_classification("It is worth it")
    assert_every_label_best_first(elements)
    top = client.text_classification("It is worth it", top_k=1)
    assert len(top) == 1 and top[0].label == elements[0].label


def test_inference_client_with_the_url_of_a_route_as_model(shared_stack, inference_client):
    client = inference_client(model=shared_stack.url)
    assert_every_label_best_first(client.text_classification("A waste of time"))


def test_a_bad_parameter_reaches_the_client_as_an_http_error(shared_stack, inference_client):
    from huggingface_hub.errors import HfHubHTTPError

    client = inference_client(base_url=shared_stack.url)
    with pytest.raises(HfHubHTTPError) as raised:
        client.text_classification("It is worth it", function_to_apply="sigmoid")
    assert raised.value.response.status_code == 400


def test_tei_predict_shapes(shared_stack):
    url = shared_stack.url + "predict"
    one = requests.post(url, json={"inputs": "It is worth it"}, timeout=30)
    many = requests.post(url, json={"inputs": ["It is worth it", "A waste of time"], "raw_scores": True}, timeout=30)
    assert one.status_code == 200 and many.status_code == 200
    assert [entry["label"] for entry in one.json()] in (["POSITIVE", "NEGATIVE"], ["NEGATIVE", "POSITIVE"])
    assert sum(entry["score"] for entry in one.json()) == pytest.approx(1.0)
    assert one.headers["X-Model-Version"]
    assert len(many.json()) == 2
    for labels in many.json():
        assert labels[0]["score"] >= labels[1]["score"]
    too_long = requests.post(url, json={"inputs": "good " * 600, "truncate": False}, timeout=30)
    assert too_long.status_code == 413
    assert too_long.json()["error"]["code"] == "text_too_many_tokens"
