"""A tiny DistilBERT sentiment classifier built at test time (random weights, small vocab).

It has the real model's shape of inputs and outputs (uncased WordPiece tokenizer, labels
NEGATIVE/POSITIVE, 512-token limit) at a fraction of the cost, for plumbing tests.
"""

from pathlib import Path

WORDS = [
    "it",
    "is",
    "was",
    "a",
    "an",
    "the",
    "this",
    "that",
    "of",
    "and",
    "to",
    "in",
    "for",
    "not",
    "very",
    "good",
    "great",
    "bad",
    "awful",
    "waste",
    "time",
    "money",
    "worth",
    "movie",
    "film",
    "story",
    "acting",
    "plot",
    "boring",
    "fun",
    "loved",
    "hated",
    "best",
    "worst",
    "really",
    "so",
    "too",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab():
    """Return the WordPiece vocabulary: specials, a few words, letters and ## pieces."""
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    pieces = [f"##{letter}" for letter in letters]
    tokens = [*SPECIAL_TOKENS, *WORDS, *letters, *pieces, ".", ",", "!", "?", "'"]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def build_tiny_model(target: Path) -> Path:
    """Save a tiny DistilBertForSequenceClassification and its tokenizer into `target`."""
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertForSequenceClassification

    vocab = tiny_vocab()
    # transformers 5 ignores vocab_file=...; the vocabulary must be passed as vocab=.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=512)
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=512,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(config).eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
