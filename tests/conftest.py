"""Fixtures shared by every test tier."""

from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = PROJECT_DIR.parent / "shared"
STANDIN_MODEL_DIR = SHARED_DIR / "models" / "minilm-sst2"
SST2_DEV = SHARED_DIR / "data" / "sst2" / "dev.tsv"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random DistilBERT classifier saved as a Hugging Face model dir."""
    from stack.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def standin_model_dir():
    """The trained MiniLM SST-2 stand-in from ../shared, or a skip when it is absent."""
    if not (STANDIN_MODEL_DIR / "config.json").is_file():
        pytest.skip(f"needs the stand-in model at {STANDIN_MODEL_DIR} (shared/ is not in user clones)")
    return STANDIN_MODEL_DIR


@pytest.fixture(scope="session")
def sst2_dev():
    """The 872 labelled SST-2 dev sentences as (sentence, label) pairs, or a skip."""
    if not SST2_DEV.is_file():
        pytest.skip(f"needs the SST-2 dev set at {SST2_DEV} (shared/ is not in user clones)")
    rows = [line.rstrip("\n").split("\t") for line in SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]]
    return [(sentence.strip(), int(label)) for sentence, label in rows]
