"""Model identity, every label's score and the truncation modes, through nginx -> facade -> TorchServe.

The long review: SST-2 dev sentences, the negative ones first and then the positive ones, about
900 tokens in all; each mode reads a different part of it.
"""

import pytest
import requests

from stack.models import has_test_model

pytestmark = pytest.mark.integration

# Words of SST-2 sentences on each side of the long review; ~450 tokens each with MiniLM's tokenizer.
SIDE_WORDS = 340


def post(stack, body):
    return requests.post(stack.url, json=body, timeout=60)


@pytest.fixture(scope="module")
def long_review(sst2_dev):
    """Negative SST-2 dev sentences, then positive ones: a review that starts badly and ends well."""

    def side(label):
        sentences, words = [], 0
        for sentence, sentence_label in sst2_dev:
            if sentence_label == label and words < SIDE_WORDS:
                sentences.append(sentence)
                words += len(sentence.split())
        return " ".join(sentences)

    return side(0) + " " + side(1)


def test_info_names_the_model_and_the_version_every_answer_carries(shared_stack, serving_model_dir):
    info = requests.get(shared_stack.url + "info", timeout=30)
    assert info.status_code == 200
    body = info.json()
    model = body["model"]
    assert model["id"] == serving_model_dir.name
    assert model["labels"] == ["NEGATIVE", "POSITIVE"]
    assert len(model["archive_version"]) == 12 and model["archive_version"] != "1.0"
    # make mar's default PRECISION=auto chose a precision for this model on this CPU (which one is
    # not fixed: tests/integration/test_precision_auto.py holds the rule); /info says which and why.
    choice = model["precision_choice"]
    assert model["runtime"] == "onnx" and model["precision"] == choice["precision"]
    assert choice["requested"] == "auto" and choice["sentences"] == 1200
    assert choice["reason"].startswith(model["precision"])
    assert body["limits"]["max_text_tokens"] == 512
    assert body["limits"]["max_request_tokens"] == 2048
    assert body["limits"]["max_texts"] == 64
    assert info.headers["X-Model-Version"] == model["archive_version"]

    answer = post(shared_stack, {"text": "It is worth it"})
    assert answer.headers["X-Model-Version"] == model["archive_version"]
    assert set(answer.json()) == {"label", "score", "container_id"}

    scrape = "\n".join(
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text for port in shared_stack.facade_ports
    )
    assert f'facade_model_answers_total{{model_version="{model["archive_version"]}"}}' in scrape


def test_all_scores_lists_both_labels_summing_to_one(shared_stack):
    answer = post(shared_stack, {"texts": ["It is worth it", "A waste of time"], "all_scores": True})
    assert answer.status_code == 200
    for result in answer.json()["results"]:
        scores = result["scores"]
        assert [entry["label"] for entry in scores] in (["POSITIVE", "NEGATIVE"], ["NEGATIVE", "POSITIVE"])
        assert scores[0] == {"label": result["label"], "score": result["score"]}
        assert sum(entry["score"] for entry in scores) == pytest.approx(1.0)


def test_a_bad_option_is_the_json_400(shared_stack):
    answer = post(shared_stack, {"text": "fine", "truncation": "middle"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_option"


def test_each_truncation_mode_reads_its_part_of_a_long_review(shared_stack, long_review):
    if not has_test_model():
        pytest.skip("labels mean something only with the trained stand-in model in ../shared")
    answers = {
        mode: post(shared_stack, {"text": long_review, "truncation": mode, "all_scores": True})
        for mode in ("right", "left", "head_tail", "window", "error")
    }
    error = answers.pop("error")
    results = {mode: answer.json() for mode, answer in answers.items()}
    positive = {mode: next(s["score"] for s in r["scores"] if s["label"] == "POSITIVE") for mode, r in results.items()}
    for mode, result in results.items():
        print(f"{mode:9} {result['label']:8} P(POSITIVE)={positive[mode]:.3f} windows={result.get('windows', '-')}")

    assert results["right"]["label"] == "NEGATIVE" and results["right"]["truncated"] is True
    assert results["left"]["label"] == "POSITIVE" and results["left"]["truncated"] is True
    assert results["head_tail"]["label"] == "POSITIVE" and results["head_tail"]["truncated"] is True
    assert results["window"]["windows"] >= 3 and "truncated" not in results["window"]
    # The first window reads what right reads and the last what left reads: the average lies between.
    assert positive["right"] <= positive["window"] <= positive["left"]
    assert error.status_code == 413
    assert error.json()["error"]["code"] == "text_too_many_tokens"
    assert "tokens, over the model's limit of 512" in error.json()["error"]["message"]


def test_windows_count_in_the_request_token_limit(shared_stack, long_review):
    # Three ~900-token texts: cut, they cost 3 x 512 tokens (under 2048); in windows, 9 x 512.
    cut = post(shared_stack, {"texts": [long_review] * 3, "truncation": "head_tail"})
    windowed = post(shared_stack, {"texts": [long_review] * 3, "truncation": "window"})
    assert cut.status_code == 200
    assert windowed.status_code == 413
    assert windowed.json()["error"]["code"] == "too_many_tokens"
