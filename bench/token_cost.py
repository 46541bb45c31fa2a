"""Cost per token of the DistilBERT-sized model, in-process: what handler.max_request_tokens is sized by.

Usage: python -m bench.token_cost [--threads 2] [--repeats 3]

Builds (once) the DistilBERT-sized timing model (stack/timing_model.py) and times one forward
pass over batches of 2048 tokens in several shapes, from 64 texts of 32 tokens to 4 texts of 512,
and one of 1024 tokens at 512 per text; prints the best of --repeats per shape (the least
disturbed by other load on the machine), in s and ms per token, with the CPU it ran on.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

from stack.models import timing_model

SHAPES = [(64, 32), (16, 128), (4, 512), (2, 512)]


def cpu_name():
    """Return the CPU's model name from /proc/cpuinfo (or the platform's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForSequenceClassification

    model_dir = timing_model()
    torch.set_num_threads(args.threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    print(f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}")
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for texts, length in SHAPES:
            ids = torch.randint(1000, 30000, (texts, length), generator=generator)
            mask = torch.ones_like(ids)
            model(input_ids=ids[:1], attention_mask=mask[:1])
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                best = min(best, time.perf_counter() - started)
            tokens = texts * length
            print(f"{texts:>3} x {length:>3} = {tokens:>4} tokens: {best:6.3f} s, {best / tokens * 1000:.3f} ms/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
