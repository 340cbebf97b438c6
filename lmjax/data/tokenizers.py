"""Tokenizers saved beside the prepared data: characters, a byte-level BPE or a WordPiece (BERT)
trained on the corpus.

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


class WordPieceTokenizer:
    """BERT's WordPiece (cased) with its special tokens; `[SEP]` separates documents.

    The special tokens take the first ids in a fixed order, so `[PAD]` is 0 as in BERT and the
    encoder can find padding without being told the tokenizer. Whitespace is not kept: decoding
    gives words joined by single spaces (fine for masked-LM and classification, not for sampling).
    """

    kind = "wordpiece"
    SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            tok.token_to_id(t) for t in self.SPECIAL)
        self.special_ids = tuple(range(len(self.SPECIAL)))
        self.eot_id = self.sep_id  # documents are separated by [SEP] in prepared token arrays

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192) -> "WordPieceTokenizer":
        from tokenizers import BertWordPieceTokenizer

        # Cased: capitals carry meaning here (speaker names, verse line starts).
        tok = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=True)
        tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                                show_progress=False, special_tokens=list(cls.SPECIAL),
                                limit_alphabet=500)
        return cls(tok._tokenizer)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Many texts at once (in parallel threads)."""
        return [np.asarray(e.ids, np.int32)
                for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> None:
        self._tok.save(os.path.join(directory, "tokenizer.json"))


KINDS = {"char": CharTokenizer, "bpe": BPETokenizer, "wordpiece": WordPieceTokenizer}


def load_tokenizer(directory: str):
    """The tokenizer saved as `tokenizer.json` in `directory`."""
    return load_tokenizer_file(os.path.join(directory, "tokenizer.json"))


def load_tokenizer_file(path: str):
    """A tokenizer file: lmjax's character table, or a Hugging Face `tokenizers` file (a
    WordPiece or a BPE, e.g. GPT-2's own tokenizer.json)."""
    with open(path) as f:
        spec = json.load(f)
    if spec.get("kind") == "char":
        return CharTokenizer(spec["chars"])
    from tokenizers import Tokenizer  # noqa: lazy (the char default does not need it)

    tok = Tokenizer.from_file(path)
    if spec.get("model", {}).get("type") == "WordPiece":
        return WordPieceTokenizer(tok)
    return BPETokenizer(tok)
