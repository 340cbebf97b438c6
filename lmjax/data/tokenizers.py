"""Tokenizers saved beside the prepared data: characters, or a byte-level BPE trained on the corpus.

Byte-level BPE (Hugging Face `tokenizers`, the GPT-2 scheme) is lossless: every string, newlines
and all, decodes back to itself, which sentencepiece's line-based training would not give us.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

UNK = "\x00"  # the character that stands for any character unseen in training


class CharTokenizer:
    """One id per character seen in the training text; id 0 is for unseen characters."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 0) -> "CharTokenizer":
        del vocab_size  # the vocabulary is whatever characters the corpus has
        seen = set()
        for t in texts:
            seen.update(t)
        seen.discard(UNK)
        return cls(UNK + "".join(sorted(seen)))

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self._index.get(c, 0) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, "tokenizer.json"), "w") as f:
            json.dump({"kind": self.kind, "chars": self.chars}, f)


class BPETokenizer:
    """Byte-level BPE; `<|endoftext|>` separates documents."""

    kind = "bpe"
    EOT = "<|endoftext|>"

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.eot_id = tok.token_to_id(self.EOT)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> "BPETokenizer":
        from tokenizers import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer()
        tok.train_from_iterator(
            texts, vocab_size=vocab_size, min_frequency=2, show_progress=False,
            special_tokens=[cls.EOT])
        return cls(tok._tokenizer)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> None:
        self._tok.save(os.path.join(directory, "tokenizer.json"))


KINDS = {"char": CharTokenizer, "bpe": BPETokenizer}


def load_tokenizer(directory: str):
    path = os.path.join(directory, "tokenizer.json")
    with open(path) as f:
        spec = json.load(f)
    if spec.get("kind") == "char":
        return CharTokenizer(spec["chars"])
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_file(path))
