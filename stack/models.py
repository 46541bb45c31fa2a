"""The models the tests and the benchmarks serve, and where each lives.

tiny    a random DistilBERT with a few dozen words (stack/tiny_model.py), built in seconds: for
        plumbing, its labels mean nothing
test    the small fine-tuned MiniLM SST-2 model in ../shared next to the checkout (CI has it, a
        fresh clone does not): its labels mean something; BENCH_STANDIN_DIR points elsewhere
timing  a random DistilBERT of the real one's size with the test model's vocabulary
        (stack/timing_model.py): it costs what the served model costs
The SST-2 sentences they are checked and loaded with live next to the test model.
"""

import os
from pathlib import Path

from stack.timing_model import build_timing_model
from stack.tiny_model import build_tiny_model

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = PROJECT_DIR.parent / "shared"
TEST_MODEL_DIR = Path(os.environ.get("BENCH_STANDIN_DIR") or SHARED_DIR / "models" / "minilm-sst2")
SST2_DIR = SHARED_DIR / "data" / "sst2"
SST2_DEV = SST2_DIR / "dev.tsv"
SST2_TRAIN = SST2_DIR / "train.tsv"
# Built once and kept (git-ignored): 67M random parameters take a while to write.
TIMING_MODEL_DIR = PROJECT_DIR / "models" / "timing-distilbert"

__all__ = ["build_tiny_model", "has_test_model", "timing_model"]


def has_test_model():
    """Return whether the trained test model is on this machine."""
    return (TEST_MODEL_DIR / "config.json").is_file()


def timing_model():
    """Return the timing model's dir, built on first use (it needs the test model's vocabulary)."""
    return build_timing_model(TEST_MODEL_DIR, TIMING_MODEL_DIR)
