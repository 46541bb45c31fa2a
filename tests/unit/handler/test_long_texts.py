"""Every label's score, the truncation modes and the model's identity, in the handler."""

import json

import numpy as np
import pytest

from sentiment_requests import InvalidRequestError, parse_request
from sentiment_truncation import MAX_WINDOWS, averaged, cut, window_starts

# 600 words the tiny model knows, each one token: over its 512-token limit (stack/tiny_model.py).
WORDS = ["good"] * 200 + ["the", "movie", "was"] * 100 + ["awful"] * 100
LONG = " ".join(WORDS)


def offsets_of(words):
    """Return the character offsets of space-separated one-token words, and the text."""
    text = " ".join(words)
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return spans, text


def test_right_and_short_texts_pass_whole():
    spans, text = offsets_of(["a", "b", "c"])
    assert cut(text, spans, 2, "right").parts[0].text == text
    assert cut(text, spans, 3, "left").parts[0].text == text


def test_left_keeps_the_last_tokens():
    spans, text = offsets_of([f"w{i}" for i in range(10)])
    result = cut(text, spans, 4, "left")
    assert result.parts[0].text == "w6 w7 w8 w9"
    assert result.dropped


def test_head_tail_keeps_a_quarter_from_the_start_and_the_rest_from_the_end():
    spans, text = offsets_of([f"w{i}" for i in range(20)])
    result = cut(text, spans, 8, "head_tail")
    assert result.parts[0].text == "w0 w1 w14 w15 w16 w17 w18 w19"
    assert result.dropped


def test_windows_overlap_by_half_and_cover_the_whole_text():
    assert window_starts(10, 4) == [0, 2, 4, 6]
    spans, text = offsets_of([f"w{i}" for i in range(10)])
    result = cut(text, spans, 4, "window")
    assert [part.text for part in result.parts] == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert not result.dropped


def test_windows_over_the_cap_spread_over_the_text_and_say_some_was_left_out():
    starts = window_starts(100 * MAX_WINDOWS, 10)
    assert len(starts) == MAX_WINDOWS
    assert starts[0] == 0 and starts[-1] == 100 * MAX_WINDOWS - 10
    spans, text = offsets_of([f"w{i}" for i in range(100 * MAX_WINDOWS)])
    assert cut(text, spans, 10, "window").dropped


def test_window_probabilities_are_averaged_by_their_tokens_into_a_distribution():
    mean = averaged([[0.9, 0.1], [0.3, 0.7]], [3, 1])
    assert mean.tolist() == pytest.approx([0.75, 0.25])
    assert mean.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"text": "x", "all_scores": "yes"}, "invalid_option"),
        ({"text": "x", "all_scores": 1}, "invalid_option"),
        ({"text": "x", "truncation": "middle"}, "invalid_option"),
        ({"text": "x", "truncation": ["left"]}, "invalid_option"),
    ],
)
def test_bad_options_are_refused_with_400(body, code):
    with pytest.raises(InvalidRequestError) as raised:
        parse_request({"body": body})
    assert (raised.value.status, raised.value.code) == (400, code)


def test_all_scores_lists_every_label_best_first_summing_to_one(handle):
    plain, _ = handle([{"body": {"text": "good fun"}}])
    responses, _ = handle([{"body": {"text": "good fun", "all_scores": True}}])
    result = responses[0]
    assert {score["label"] for score in result["scores"]} == {"NEGATIVE", "POSITIVE"}
    assert [s["score"] for s in result["scores"]] == sorted((s["score"] for s in result["scores"]), reverse=True)
    assert sum(s["score"] for s in result["scores"]) == pytest.approx(1.0)
    assert result["scores"][0] == {"label": result["label"], "score": result["score"]}
    assert "scores" not in plain[0]
    assert {key: result[key] for key in plain[0]} == plain[0]


@pytest.mark.parametrize("mode", ["right", "left", "head_tail"])
def test_cutting_modes_flag_a_long_text_truncated(handle, mode):
    responses, context = handle([{"body": {"texts": [LONG, "good"], "truncation": mode}}])
    long_result, short_result = responses[0]["results"]
    assert long_result["truncated"] is True
    assert "truncated" not in short_result
    assert context.statuses == {}


@pytest.mark.parametrize(
    ("mode", "kept"),
    [("left", WORDS[-510:]), ("head_tail", WORDS[:127] + WORDS[-383:]), ("right", WORDS[:510])],
)
def test_each_cut_classifies_exactly_the_tokens_it_keeps(handle, mode, kept):
    # 510 = the tiny model's 512 tokens less [CLS] and [SEP]; head_tail: a quarter (127) from the start.
    responses, _ = handle([{"body": {"text": LONG, "truncation": mode}}])
    direct, _ = handle([{"body": {"text": " ".join(kept)}}])
    assert responses[0]["label"] == direct[0]["label"]
    assert responses[0]["score"] == pytest.approx(direct[0]["score"], abs=1e-6)


def test_error_mode_refuses_a_long_text_with_its_token_count(handle):
    responses, context = handle([{"body": {"texts": ["good", LONG], "truncation": "error"}}, {"body": {"text": "x"}}])
    error = responses[0]["error"]
    assert context.statuses[0][0] == 413
    assert error["code"] == "text_too_many_tokens"
    assert error["index"] == 1 and error["tokens"] == 602 and error["max_text_tokens"] == 512
    assert "602 tokens" in error["message"]
    assert "label" in responses[1]


def test_error_mode_classifies_texts_within_the_limit(handle):
    plain, _ = handle([{"body": {"text": "good fun"}}])
    responses, _ = handle([{"body": {"text": "good fun", "truncation": "error"}}])
    assert responses[0] == plain[0]


def test_window_mode_reads_the_whole_text_and_says_how_many_windows(handle):
    responses, context = handle([{"body": {"texts": [LONG, "good"], "truncation": "window", "all_scores": True}}])
    long_result, short_result = responses[0]["results"]
    assert long_result["windows"] == 2  # 600 tokens in windows of 510, stride 255
    assert "truncated" not in long_result
    assert short_result["windows"] == 1
    assert sum(s["score"] for s in long_result["scores"]) == pytest.approx(1.0)
    assert context.statuses == {}


def test_window_cost_counts_every_window_in_the_request_token_limit(handle):
    # Three long texts cut once cost 3 x 512 tokens, under the 2048 per request; read in two windows each, 6 x 512.
    cut_once, _ = handle([{"body": {"texts": [LONG] * 3, "truncation": "head_tail"}}])
    windowed, context = handle([{"body": {"texts": [LONG] * 3, "truncation": "window"}}])
    assert len(cut_once[0]["results"]) == 3
    assert context.statuses[0][0] == 413
    assert windowed[0]["error"]["code"] == "too_many_tokens"
    assert windowed[0]["error"]["tokens"] > 2048


def test_every_answer_carries_the_archive_version(handle):
    _, context = handle([{"body": {"text": "good"}}, {"body": {"text": ""}}])
    assert context.response_headers[0]["X-Model-Version"] == "0123456789ab"
    assert context.response_headers[1]["X-Model-Version"] == "0123456789ab"


def test_describe_reports_identity_labels_and_token_limits(loaded_handler):
    described = json.loads(loaded_handler.describe_handle())
    assert described["archive_version"] == "0123456789ab"
    assert described["labels"] == ["NEGATIVE", "POSITIVE"]
    assert described["max_text_tokens"] == 512
    assert described["max_request_tokens"] >= 512
    assert described["runtime"] in ("onnx", "torch")
    assert described["precision"] == "fp32"


def test_a_describe_job_is_answered_with_the_description_beside_classified_requests(handle, loaded_handler, caplog):
    rows = [{"body": {"text": "good"}}, {"body": {}}, {"body": {"text": "bad"}}]
    with caplog.at_level("INFO", logger="sentiment_handler"):
        responses, context = handle(rows, headers={1: {"X-Sentiment-Describe": "1"}})
    assert responses[1] == loaded_handler.description()
    assert responses[1]["labels"] == ["NEGATIVE", "POSITIVE"] and responses[1]["max_text_tokens"] == 512
    assert [set(responses[index]) for index in (0, 2)] == [{"label", "score"}] * 2
    assert 1 not in context.statuses  # 200, not an error
    assert context.response_headers[1]["X-Model-Version"] == "0123456789ab"
    assert "texts=0 tokens=0 status=200 code=describe" in caplog.text


def test_window_average_of_identical_windows_is_that_window():
    row = np.array([0.2, 0.8])
    assert averaged([row, row, row], [5, 5, 2]).tolist() == pytest.approx(row.tolist())


def test_raw_scores_add_the_logits_whose_softmax_is_the_scores(handle):
    responses, _ = handle([{"body": {"texts": ["good fun", LONG], "raw_scores": True, "truncation": "window"}}])
    for result in responses[0]["results"]:
        assert set(result["logits"]) == {"NEGATIVE", "POSITIVE"}
        logits = np.array([result["logits"]["NEGATIVE"], result["logits"]["POSITIVE"]])
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        if result["windows"] == 1:
            assert probabilities.max() == pytest.approx(result["score"], abs=1e-6)
        assert max(result["logits"], key=result["logits"].get) == result["label"]
    plain, _ = handle([{"body": {"text": "good fun"}}])
    assert "logits" not in plain[0]


def test_the_log_line_carries_the_callers_trace_id(handle, caplog):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {0: {"X-Request-ID": "t-1", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, 1: {}}
    with caplog.at_level("INFO", logger="sentiment_handler"):
        handle([{"body": {"text": "good"}}, {"body": {"text": "fun"}}], headers=headers)
    lines = [record.getMessage() for record in caplog.records if "request_id=" in record.getMessage()]
    assert lines[0].startswith("request_id=t-1 ") and lines[0].endswith(f" trace_id={trace_id}")
    assert "trace_id" not in lines[1]
