"""The two runtimes on the tiny model: ONNX Runtime must compute what torch computes."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from sentiment_config import handler_options
from sentiment_runtime import OnnxModel, TorchModel, loaded_model, warm_up, warmup_shapes

UNEVEN = ["good", "it is worth it", "this movie was a waste of time and money , the plot was boring", "fun !"]


@pytest.fixture(scope="module")
def models(tiny_archive_dir):
    """(onnx, torch) models of the same archive dir, and its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_archive_dir)
    return (
        OnnxModel(tiny_archive_dir, threads=1),
        TorchModel(tiny_archive_dir, torch.device("cpu"), "fp32", 1),
        tokenizer,
    )


def both_logits(models, texts):
    onnx_model, torch_model, tokenizer = models
    encoded = tokenizer(texts, padding=True, pad_to_multiple_of=8, truncation=True, max_length=512, return_tensors="np")
    inputs = (encoded["input_ids"], encoded["attention_mask"])
    return onnx_model.logits(*inputs), torch_model.logits(*inputs)


def test_onnx_logits_equal_torch_logits_on_a_padded_batch_of_uneven_lengths(models):
    onnx_logits, torch_logits = both_logits(models, UNEVEN)
    assert onnx_logits.shape == torch_logits.shape == (len(UNEVEN), 2)
    assert onnx_logits.dtype == np.float32
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)


def test_onnx_logits_equal_torch_logits_on_a_512_token_text(models):
    text = " ".join(["good movie"] * 400)
    onnx_logits, torch_logits = both_logits(models, [text, "bad"])
    assert models[2]([text], truncation=True, max_length=512, return_tensors="np")["input_ids"].shape == (1, 512)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)


def test_a_padded_text_gets_the_logits_it_gets_alone(models):
    onnx_model, _, tokenizer = models
    alone = tokenizer(["good"], return_tensors="np")
    padded = tokenizer(["good", UNEVEN[2]], padding=True, return_tensors="np")
    np.testing.assert_allclose(
        onnx_model.logits(padded["input_ids"], padded["attention_mask"])[0],
        onnx_model.logits(alone["input_ids"], alone["attention_mask"])[0],
        atol=1e-5,
    )


def test_the_runtime_comes_from_the_options(tiny_archive_dir):
    assert isinstance(loaded_model(tiny_archive_dir, handler_options({}, environ={}, cores=1)), OnnxModel)
    options = handler_options({"handler": {"runtime": "torch"}}, environ={}, cores=1)
    assert isinstance(loaded_model(tiny_archive_dir, options), TorchModel)


def test_warmup_shapes_start_with_the_largest_pass_and_cover_every_padded_length():
    shapes = warmup_shapes(max_length=512, max_batch_tokens=1024)
    assert shapes[0] == (2, 512)
    assert {length for _, length in shapes} == set(range(8, 513, 8))
    assert all(texts * length <= 1024 for texts, length in shapes)
    assert len(shapes) == len(set(shapes))


def test_warm_up_with_no_time_left_runs_only_the_largest_pass(models):
    shapes = warmup_shapes(max_length=64, max_batch_tokens=256)
    assert warm_up(models[0], shapes, budget_s=0, token_id=2) == [(4, 64)]
    assert warm_up(models[0], shapes, budget_s=60, token_id=2) == shapes


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_export_keeps_its_scratch_files_next_to_the_target_not_in_tmp(tiny_model_dir, tmp_path, precision):
    # Compose's model job has a 64 MB tmpfs /tmp; a DistilBERT export is 268 MB.
    import tempfile

    from tools.onnx_export import export_onnx

    unusable = tmp_path / "no-such-tmp"
    before = tempfile.tempdir
    tempfile.tempdir = str(unusable)
    try:
        target = export_onnx(tiny_model_dir, tmp_path / "model.onnx", precision)
    finally:
        tempfile.tempdir = before
    assert target.stat().st_size > 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]
