"""Hugging Face's inference shape on POST / and text-embeddings-inference's POST /predict."""

import pytest


def scored(predictor_label, score):
    other = "NEGATIVE" if predictor_label == "POSITIVE" else "POSITIVE"
    return [{"label": predictor_label, "score": score}, {"label": other, "score": 1 - score}]


@pytest.fixture
def scoring_predictor(predictor):
    """The fake predictor, answering every label's score and logits when asked (as the handler does)."""
    plain = predictor.classify

    def classify(texts, request_id, options=None):
        results = plain(texts, request_id, options)
        for result in results:
            if options and options.get("all_scores"):
                result["scores"] = scored(result["label"], result["score"])
            if options and options.get("raw_scores"):
                result["logits"] = {"POSITIVE": 4.0, "NEGATIVE": -4.0}
        return results

    predictor.classify = classify
    return predictor


def test_the_seeds_text_contract_is_unchanged_next_to_inputs(client, scoring_predictor):
    response = client.post("/", json={"text": "good", "inputs": "bad"})
    assert response.get_json() == {"label": "POSITIVE", "score": 0.9998, "container_id": "test-box"}


def test_inputs_get_a_list_of_label_lists_best_first(client, scoring_predictor):
    one = client.post("/", json={"inputs": "good"})
    many = client.post("/", json={"inputs": ["good", "bad"], "parameters": {"top_k": 1}})
    assert one.status_code == 200
    assert one.get_json() == [scored("POSITIVE", 0.9998)]
    assert many.get_json() == [[{"label": "POSITIVE", "score": 0.9998}], [{"label": "NEGATIVE", "score": 0.75}]]
    assert scoring_predictor.options[0] == {"all_scores": True, "truncation": "right"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"inputs": None}, "missing_text"),
        ({"inputs": 3}, "invalid_text_type"),
        ({"inputs": []}, "empty_texts"),
        ({"inputs": ["a", "b", "c", "d"]}, "too_many_texts"),
        ({"inputs": "x" * 21}, "text_too_long"),
        ({"inputs": "good", "parameters": {"function_to_apply": "sigmoid"}}, "invalid_option"),
        ({"inputs": "good", "parameters": {"top_k": 0}}, "invalid_option"),
        ({"inputs": "good", "parameters": []}, "invalid_option"),
    ],
)
def test_bad_inference_requests_get_the_json_400(client, scoring_predictor, body, code):
    response = client.post("/", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_predict_answers_teis_shapes(client, scoring_predictor):
    one = client.post("/predict", json={"inputs": "good"})
    many = client.post("/predict", json={"inputs": ["good", "bad"]})
    raw = client.post("/predict", json={"inputs": "good", "raw_scores": True})
    assert one.get_json() == scored("POSITIVE", 0.9998)
    assert many.get_json() == [scored("POSITIVE", 0.9998), scored("NEGATIVE", 0.75)]
    assert raw.get_json() == [{"label": "POSITIVE", "score": 4.0}, {"label": "NEGATIVE", "score": -4.0}]


@pytest.mark.parametrize(
    ("body", "truncation"),
    [
        ({"inputs": "good"}, "right"),
        ({"inputs": "good", "truncate": False}, "error"),
        ({"inputs": "good", "truncate": True}, "right"),
        ({"inputs": "good", "truncate": True, "truncation_direction": "Left"}, "left"),
    ],
)
def test_predict_maps_truncate_to_a_truncation(client, scoring_predictor, body, truncation):
    client.post("/predict", json=body)
    assert scoring_predictor.options[-1]["truncation"] == truncation


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": "good", "raw_scores": "yes"},
        {"inputs": "good", "truncate": 1},
        {"inputs": "good", "truncation_direction": "Middle"},
    ],
)
def test_predict_refuses_bad_options(client, scoring_predictor, body):
    response = client.post("/predict", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_option"
