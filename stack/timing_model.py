"""A model that costs exactly what DistilBERT SST-2 costs: its config, random weights, real vocab.

The real checkpoint cannot be downloaded on an offline machine; for timing, only the
shape matters (vocab 30522, dim 768, 6 layers, 12 heads, hidden 3072, 67M parameters).
The vocabulary is the real uncased WordPiece one, taken from a local model dir that has
it (e.g. the MiniLM SST-2 stand-in), so tokenization costs what it really costs.
"""

from pathlib import Path

DISTILBERT_CONFIG = {
    "vocab_size": 30522,
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 3072,
    "max_position_embeddings": 512,
    "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
    "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
}


def read_vocab(vocab_file):
    """Return the WordPiece vocabulary of a vocab.txt as {token: id}."""
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    return {token: index for index, token in enumerate(tokens)}


def build_timing_model(vocab_dir: Path, target: Path) -> Path:
    """Save a random-weight DistilBERT classifier with the vocab of `vocab_dir` into `target` (once)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertForSequenceClassification

    vocab = read_vocab(vocab_dir / "vocab.txt")
    # transformers 5 ignores vocab_file=...; pass the vocabulary itself and check it took.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=512)
    if len(tokenizer) != DISTILBERT_CONFIG["vocab_size"]:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {DISTILBERT_CONFIG['vocab_size']}")
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(**DISTILBERT_CONFIG)).eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
