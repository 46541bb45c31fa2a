"""The handler on a tiny real model, with a fake TorchServe context."""

import inspect
import json
import socket
import time

import pytest
import torch
from transformers import pipeline

from tests.unit.handler.conftest import FakeContext

import sentiment_handler
from sentiment_handler import SentimentHandler

SHORT = "it is worth it"
LONGER = "this movie was a waste of time and money , the plot was boring and the acting was awful"
UNEVEN = ["good", SHORT, LONGER, "the worst film", "fun !"]


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """transformers' own text-classification pipeline on the same model dir."""
    return pipeline("text-classification", model=str(tiny_model_dir), device="cpu")


def assert_matches_pipeline(result, expected):
    assert result["label"] == expected["label"]
    assert result["score"] == pytest.approx(expected["score"], abs=1e-5)


@pytest.mark.parametrize("text", [SHORT, LONGER, "good"])
def test_single_text_equals_pipeline_output(handle, reference, text):
    responses, _ = handle([{"body": {"text": text}}])
    assert_matches_pipeline(responses[0], reference(text)[0])


def test_padded_batch_of_uneven_lengths_equals_pipeline_output(handle, reference):
    responses, _ = handle([{"body": {"texts": UNEVEN}}])
    results = responses[0]["results"]
    assert len(results) == len(UNEVEN)
    for result, text in zip(results, UNEVEN, strict=True):
        assert_matches_pipeline(result, reference(text)[0])


def test_order_is_preserved_across_a_batch_mixing_text_and_texts(handle, reference):
    rows = [
        {"body": {"texts": UNEVEN[:2]}},
        {"body": {"text": UNEVEN[2]}},
        {"body": {"texts": UNEVEN[3:]}},
        {"body": {"text": UNEVEN[0]}},
    ]
    responses, context = handle(rows)
    flat = [*responses[0]["results"], responses[1], *responses[2]["results"], responses[3]]
    for result, text in zip(flat, [*UNEVEN, UNEVEN[0]], strict=True):
        assert_matches_pipeline(result, reference(text)[0])
    assert context.statuses == {}


@pytest.mark.parametrize(
    ("body", "wrap"),
    [
        ({"text": SHORT}, dict),
        (json.dumps({"text": SHORT}), str),
        (json.dumps({"text": SHORT}).encode(), bytes),
        (json.dumps({"text": SHORT}).encode(), bytearray),
    ],
)
def test_body_is_accepted_as_dict_str_bytes_or_bytearray(handle, body, wrap):
    responses, context = handle([{"body": wrap(body)}])
    assert responses[0]["label"] in {"NEGATIVE", "POSITIVE"}
    assert context.statuses == {}


def test_form_field_data_is_read_like_a_body(handle):
    responses, _ = handle([{"data": json.dumps({"text": SHORT}).encode()}])
    assert set(responses[0]) == {"label", "score"}


def test_a_3000_word_text_is_truncated_and_flagged(handle, loaded_handler):
    long_text = " ".join(["good movie"] * 1500)
    responses, _ = handle([{"body": {"texts": [long_text, SHORT]}}])
    long_result, short_result = responses[0]["results"]
    assert long_result["truncated"] is True
    assert "truncated" not in short_result
    assert loaded_handler.max_length == 512


def test_a_text_exactly_at_the_limit_is_not_flagged(handle, loaded_handler):
    # [CLS] + 510 words + [SEP] = 512 tokens: nothing cut.
    responses, _ = handle([{"body": {"text": " ".join(["good"] * 510)}}])
    assert "truncated" not in responses[0]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xff\xfe not utf-8", "invalid_json"),
        (b"{not json", "invalid_json"),
        ([1, 2], "invalid_json"),
        ({"text": "a", "texts": ["b"]}, "conflicting_fields"),
        ({"comment": "no text"}, "missing_text"),
        ({"texts": []}, "empty_texts"),
        ({"text": 42}, "invalid_text_type"),
        ({"texts": "not a list"}, "invalid_text_type"),
        ({"texts": ["ok", None]}, "invalid_text_type"),
        ({"text": "   "}, "empty_text"),
    ],
)
def test_a_malformed_request_gets_its_400_while_the_rest_of_the_batch_succeeds(handle, body, code):
    responses, context = handle([{"body": {"text": SHORT}}, {"body": body}, {"body": {"texts": [SHORT]}}])
    assert len(responses) == 3
    assert responses[0]["label"] in {"NEGATIVE", "POSITIVE"}
    assert responses[1]["error"]["code"] == code
    assert responses[1]["error"]["message"]
    assert responses[2]["results"][0]["label"] in {"NEGATIVE", "POSITIVE"}
    assert set(context.statuses) == {1}
    assert context.statuses[1][0] == 400
    assert context.content_types[1] == "application/json"


def test_a_batch_of_only_bad_requests_returns_one_error_each(handle):
    responses, context = handle([{"body": b"{"}, {"body": {"text": ""}}])
    assert [response["error"]["code"] for response in responses] == ["invalid_json", "empty_text"]
    assert [context.statuses[index][0] for index in (0, 1)] == [400, 400]


def initialized(model_dir, **options):
    """Return a SentimentHandler initialized with these handler: options (no warm-up unless asked)."""
    handler = SentimentHandler()
    handler.initialize(FakeContext(model_dir, {"minWorkers": 1, "handler": {"warmup_seconds": 0, **options}}))
    return handler


def test_initialize_sets_torch_intra_op_threads_from_the_yaml(tiny_archive_dir, monkeypatch):
    monkeypatch.delenv("SENTIMENT_TORCH_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        initialized(tiny_archive_dir, runtime="torch", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_onnx_session_gets_the_yamls_intra_op_threads_and_one_inter_op_thread(tiny_archive_dir, monkeypatch):
    monkeypatch.delenv("SENTIMENT_TORCH_THREADS", raising=False)
    handler = initialized(tiny_archive_dir, runtime="onnx", threads=1)
    session_options = handler.model.session.get_session_options()
    assert (session_options.intra_op_num_threads, session_options.inter_op_num_threads) == (1, 1)


def test_onnx_is_the_default_runtime(tiny_archive_dir):
    handler = initialized(tiny_archive_dir)
    assert handler.runtime == "onnx"
    assert handler.model.session.get_providers() == ["CPUExecutionProvider"]


def test_torch_model_is_loaded_in_float32_eval_mode_on_cpu(tiny_archive_dir):
    model = initialized(tiny_archive_dir, runtime="torch").model.model
    parameter = next(model.parameters())
    assert parameter.dtype == torch.float32
    assert parameter.device.type == "cpu"
    assert not model.training


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_initialize_loads_from_the_archive_dir_without_touching_the_network(tiny_archive_dir, monkeypatch, runtime):
    connections = []

    def refuse(sock, address):
        connections.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    handler = initialized(tiny_archive_dir, runtime=runtime)
    assert connections == []
    assert handler.model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}


def test_an_onnx_worker_on_an_archive_without_model_onnx_says_how_to_build_one(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="RUNTIME=onnx"):
        initialized(tiny_model_dir, runtime="onnx")


def test_each_request_is_logged_with_its_request_id_and_never_its_text(handle, loaded_handler, caplog):
    private_text = "my very private sentence"
    tokens = len(loaded_handler.tokenizer(private_text)["input_ids"])
    with caplog.at_level("INFO", logger="sentiment_handler"):
        handle([{"body": {"text": private_text}}, {"body": {"texts": 5}}], headers={0: {"X-Request-ID": "trace-7"}})
    lines = [record.getMessage() for record in caplog.records]
    assert f"request_id=trace-7 texts=1 tokens={tokens} status=200 code=- batch=2" in lines
    assert "request_id=- texts=0 tokens=0 status=400 code=invalid_text_type batch=2" in lines
    assert all(private_text not in line for line in lines)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_small_passes_still_answer_every_request_in_order(tiny_archive_dir, tiny_model_dir, reference, runtime):
    handler = initialized(tiny_archive_dir, runtime=runtime, max_batch_tokens=8)
    texts = [*UNEVEN, "good", LONGER]
    context = FakeContext(tiny_model_dir)
    responses = handler.handle([{"body": {"texts": texts[:4]}}, {"body": {"texts": texts[4:]}}], context)
    flat = [*responses[0]["results"], *responses[1]["results"]]
    for result, text in zip(flat, texts, strict=True):
        assert_matches_pipeline(result, reference(text)[0])


def test_torch_int8_mode_quantizes_the_linear_layers(tiny_archive_dir, tiny_model_dir):
    handler = initialized(tiny_archive_dir, runtime="torch", precision="int8")
    assert not any(type(module) is torch.nn.Linear for module in handler.model.model.modules())
    responses = handler.handle([{"body": {"text": SHORT}}], FakeContext(tiny_model_dir))
    assert responses[0]["label"] in {"NEGATIVE", "POSITIVE"}


def test_torch_bf16_mode_stays_close_to_the_pipeline(tiny_archive_dir, tiny_model_dir, reference):
    handler = initialized(tiny_archive_dir, runtime="torch", precision="bf16")
    responses = handler.handle([{"body": {"texts": UNEVEN}}], FakeContext(tiny_model_dir))
    for result, text in zip(responses[0]["results"], UNEVEN, strict=True):
        assert result["score"] == pytest.approx(reference(text)[0]["score"], abs=0.02)


@pytest.fixture(scope="module")
def limited_handler(tiny_archive_dir):
    """A handler whose requests may cost at most 600 tokens (the tiny model's texts are cut at 512)."""
    handler = SentimentHandler()
    config = {"minWorkers": 1, "handler": {"max_request_tokens": 600, "batch_budget_tokens": 600}}
    handler.initialize(FakeContext(tiny_archive_dir, config))
    return handler


def words(count):
    """Return a text of `count` one-token words: count + 2 tokens with [CLS] and [SEP]."""
    return " ".join(["good"] * count)


def test_a_request_over_the_token_limit_gets_413_with_the_limit_and_its_count(limited_handler, tiny_model_dir):
    context = FakeContext(tiny_model_dir)
    # 298 + 2 tokens each: 600 is allowed, 900 is not; a 2000-word text counts 512 (truncated).
    rows = [{"body": {"texts": [words(298)] * 3}}, {"body": {"texts": [words(298)] * 2}}]
    responses = limited_handler.handle(rows, context)
    assert context.statuses[0][0] == 413
    error = responses[0]["error"]
    assert error["code"] == "too_many_tokens"
    assert "900 tokens" in error["message"] and "600" in error["message"] and "at least 2 requests" in error["message"]
    assert (error["tokens"], error["max_request_tokens"], error["max_text_tokens"]) == (900, 600, 512)
    assert len(responses[1]["results"]) == 2
    responses = limited_handler.handle([{"body": {"texts": [words(2000), words(100)]}}], context)
    assert responses[0]["error"]["tokens"] == 512 + 102


def test_the_limit_is_never_below_one_text_at_the_models_token_limit(tiny_archive_dir, tiny_model_dir):
    handler = SentimentHandler()
    handler.initialize(FakeContext(tiny_archive_dir, {"minWorkers": 1, "handler": {"max_request_tokens": 10}}))
    assert handler.max_request_tokens == 512
    responses = handler.handle([{"body": {"text": words(3000)}}], FakeContext(tiny_model_dir))
    assert responses[0]["truncated"] is True


def test_a_request_whose_deadline_has_passed_is_answered_503_without_running(limited_handler, tiny_model_dir):
    now = time.time()
    headers = {0: {"X-Request-Deadline": str(now - 1)}, 1: {"X-Request-Deadline": str(now + 60).encode()}}
    context = FakeContext(tiny_model_dir, headers=headers)
    responses = limited_handler.handle([{"body": {"text": SHORT}}, {"body": {"text": LONGER}}], context)
    assert context.statuses == {0: (503, responses[0]["error"]["message"])}
    assert responses[0]["error"]["code"] == "deadline_exceeded"
    assert responses[1]["label"] in {"NEGATIVE", "POSITIVE"}


def test_a_batch_runs_the_oldest_jobs_within_the_budget_and_answers_the_rest_busy_to_send_again(
    limited_handler, tiny_model_dir, reference
):
    # 300 + 500 + 12 tokens: the 500-token job was deferred once, so it goes first; the 12 still fit
    # in 600, the 300 would not. A job without the facade's header (a direct client) always runs.
    headers = {0: {"X-Job-Deferrals": "0"}, 1: {"X-Job-Deferrals": "1"}, 2: {"X-Job-Deferrals": "0"}}
    context = FakeContext(tiny_model_dir, headers=headers)
    rows = [{"body": {"text": words(298)}}, {"body": {"text": words(498)}}, {"body": {"text": words(10)}}]
    responses = limited_handler.handle(rows, context)
    assert set(context.statuses) == {0}
    assert context.statuses[0][0] == 503
    assert responses[0]["error"]["code"] == "busy"
    assert_matches_pipeline(responses[1], reference(words(498))[0])
    assert_matches_pipeline(responses[2], reference(words(10))[0])
    responses = limited_handler.handle(rows, FakeContext(tiny_model_dir))
    assert all("label" in response for response in responses)


def test_a_multi_text_answer_states_its_tokens_for_the_facades_count(limited_handler, tiny_model_dir):
    responses = limited_handler.handle([{"body": {"texts": [words(10), words(3000)]}}], FakeContext(tiny_model_dir))
    assert responses[0]["tokens"] == 12 + 512


def test_unreadable_deadlines_are_ignored(limited_handler, tiny_model_dir):
    headers = {0: {"X-Request-Deadline": "soon"}, 1: {"X-Request-Deadline": "nan"}}
    context = FakeContext(tiny_model_dir, headers=headers)
    responses = limited_handler.handle([{"body": {"text": SHORT}}, {"body": {"text": SHORT}}], context)
    assert context.statuses == {}
    assert [response["label"] for response in responses] == [responses[0]["label"]] * 2


def test_the_worker_learns_its_speed_and_skips_a_request_it_could_not_finish_in_time(tiny_archive_dir, tiny_model_dir):
    handler = SentimentHandler()
    handler.initialize(FakeContext(tiny_archive_dir))
    handler.handle([{"body": {"texts": [words(298)] * 2}}], FakeContext(tiny_model_dir))
    assert handler.seconds_per_token > 0
    # Seconds for 300 tokens, at the speed just measured; a deadline that leaves a tenth of that.
    needs_s = handler.seconds_per_token * 300
    headers = {0: {"X-Request-Deadline": str(time.time() + needs_s / 10)}}
    context = FakeContext(tiny_model_dir, headers=headers)
    responses = handler.handle([{"body": {"text": words(298)}}], context)
    assert responses[0]["error"]["code"] == "deadline_exceeded"
    assert context.statuses[0][0] == 503


def test_after_one_slow_batch_light_traffic_brings_the_speed_estimate_back(tiny_archive_dir, tiny_model_dir):
    handler = SentimentHandler()
    handler.initialize(FakeContext(tiny_archive_dir))
    handler.handle([{"body": {"text": SHORT}}], FakeContext(tiny_model_dir))
    normal = handler.seconds_per_token
    handler.seconds_per_token = 1.0  # as after a batch stalled by a noisy neighbour: 300 tokens take 300 s
    for _ in range(40):
        handler.handle([{"body": {"text": SHORT}}], FakeContext(tiny_model_dir))
    assert handler.seconds_per_token < 100 * normal
    headers = {0: {"X-Request-Deadline": str(time.time() + 10)}}
    responses = handler.handle([{"body": {"text": words(298)}}], FakeContext(tiny_model_dir, headers=headers))
    assert "label" in responses[0]


@pytest.mark.parametrize(
    "text",
    [
        "good " * 600,
        "!" * 3000,
        "很好看的电影" * 200,
        "🎉 " * 700 + "ok",
        "e\u0301" * 900 + " fine",
        "a\u200b" * 1200,
        ("word, " * 100 + "x" * 300 + " ") * 4,
        "short text",
    ],
)
def test_a_text_is_tokenized_only_as_far_as_the_model_reads_with_the_same_ids(tiny_archive_dir, text):
    handler = SentimentHandler()
    handler.initialize(FakeContext(tiny_archive_dir))
    seen = []
    count = handler.token_counts
    handler.token_counts = lambda texts: seen.extend(texts) or count(texts)
    (prefix,) = handler.prefixes([text])
    whole = handler.tokenizer([text], truncation=True, max_length=handler.max_length)["input_ids"]
    cut = handler.tokenizer([prefix], truncation=True, max_length=handler.max_length)["input_ids"]
    assert cut == whole
    plus_one = handler.max_length + 1
    assert len(handler.tokenizer([prefix], truncation=True, max_length=plus_one)["input_ids"][0]) == min(
        len(handler.tokenizer([text])["input_ids"][0]), plus_one
    )
    # Never more than twice the characters of the prefix it needed (or the first try's).
    assert sum(len(piece) for piece in seen) <= max(2 * len(prefix), 4 * 4 * plus_one)


def test_a_facade_clock_20_s_behind_does_not_make_its_requests_look_late(limited_handler, tiny_model_dir):
    # The facade stamped the job "14.5 s left" at what its clock called 20 s ago.
    now = time.time()
    headers = {0: {"X-Request-Deadline": str(now - 20 + 14.5 - 20), "X-Request-Budget": "14.5", "X-Facade-ID": "f1"}}
    context = FakeContext(tiny_model_dir, headers=headers)
    responses = limited_handler.handle([{"body": {"text": SHORT}}], context)
    assert context.statuses == {}
    assert responses[0]["label"] in {"NEGATIVE", "POSITIVE"}


def test_the_handler_module_defines_one_class_as_torchserve_requires():
    classes = [obj for _, obj in inspect.getmembers(sentiment_handler, inspect.isclass)]
    assert [cls.__name__ for cls in classes if cls.__module__ == "sentiment_handler"] == ["SentimentHandler"]
