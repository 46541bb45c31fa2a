"""Fixtures shared by every test tier."""

import pytest

from stack.models import PROJECT_DIR, SST2_DEV, TEST_MODEL_DIR, build_tiny_model, has_test_model

__all__ = ["PROJECT_DIR", "TEST_MODEL_DIR"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random DistilBERT classifier saved as a Hugging Face model dir."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def standin_model_dir():
    """The trained MiniLM SST-2 stand-in from ../shared, or a skip when it is absent."""
    if not has_test_model():
        pytest.skip(f"needs the stand-in model at {TEST_MODEL_DIR} (shared/ is not in user clones)")
    return TEST_MODEL_DIR


@pytest.fixture(scope="session")
def sst2_dev():
    """The 872 labelled SST-2 dev sentences as (sentence, label) pairs, or a skip."""
    if not SST2_DEV.is_file():
        pytest.skip(f"needs the SST-2 dev set at {SST2_DEV} (shared/ is not in user clones)")
    rows = [line.rstrip("\n").split("\t") for line in SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]]
    return [(sentence.strip(), int(label)) for sentence, label in rows]
