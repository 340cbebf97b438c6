"""Cleaning and deduplication of documents (`data.clean`), a stage of `data.name='stream'`.

Per document, in the worker processes: normalisation, quality rules, an exact hash and the
locality-sensitive band keys of a MinHash signature. In the main process, in document order:
`Deduper` drops exact and near duplicates. Both splits share one index, so no validation
document keeps a near-duplicate in training (whichever comes second is dropped).

Quality rules (Gopher's, Rae et al. 2021, with their thresholds as defaults):
- `min_words` / `max_words`: 50 to 100,000 words;
- `mean_word_length`: mean word length within [3, 10] characters;
- `alpha_words`: at least 80% of words contain a letter;
- `duplicate_lines`: at most 30% of non-empty lines are repeats of another line (Gopher's
  repetition rule, which also catches boilerplate).

Near duplicates: MinHash over word 5-gram shingles, `num_perm` hash functions, banded into
datasketch's LSH parameters for `near_threshold`, weighted towards recall (false negatives 19x
false positives). The signature itself is computed with numpy (a multiply-add hash family on
64 bits) rather than datasketch's per-shingle Python loop, which costs about a third of the
tokenizer's time; the index keeps one 64-bit key per band and document (0.8 KB per document,
measured) instead of datasketch's in-memory `MinHashLSH` (3.2 KB per document with
the same bands, measured).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

RULES = ("min_words", "max_words", "mean_word_length", "alpha_words", "duplicate_lines")
SHINGLE = 5  # words per shingle
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")  # one pass, not one per word
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_MIX = np.uint64(0x9E3779B97F4A7C15)


def normalize(text: str) -> str:
    """Unicode NFC, '\\n' line ends, no trailing spaces, at most one blank line in a row (and
    lone surrogates, which JSON allows, replaced: they cannot be written as UTF-8)."""
    if not text.isascii():  # (isascii is O(1))
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", _TRAILING_SPACE.sub("\n", text)).strip()


def quality(text: str, words: list[str], c) -> str:
    """The first rule the document breaks, or '' when it passes them all."""
    n = len(words)
    if n < c.min_words:
        return "min_words"
    if n > c.max_words:
        return "max_words"
    mean = sum(map(len, words)) / n
    if not c.min_mean_word_length <= mean <= c.max_mean_word_length:
        return "mean_word_length"
    if n - len(_NO_LETTER_WORD.findall(text)) < c.min_alpha_words * n:
        return "alpha_words"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines and 1 - len(set(lines)) / len(lines) > c.max_duplicate_lines:
        return "duplicate_lines"
    return ""


def exact_key(text: str) -> int:
    return xxhash.xxh3_128_intdigest(text.encode())


class MinHasher:
    """Band keys of a document's MinHash signature: two documents share a key with the
    probability that LSH gives their Jaccard similarity (on word 5-grams)."""

    def __init__(self, num_perm: int, bands: int, rows: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        used = bands * rows or num_perm  # hash functions beyond the bands would go unused
        self.a = rng.integers(1, 2**63, num_perm, dtype=np.uint64)[:used] | np.uint64(1)
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)[:used]
        self.bands, self.rows = bands, rows

    def signature(self, words: list[str]) -> np.ndarray:
        h = np.fromiter(map(xxhash.xxh64_intdigest, map(str.encode, words)), np.uint64,
                        len(words))
        if len(h) >= SHINGLE:  # a 5-gram's hash from its words' hashes, vectorised
            g = h[:len(h) - SHINGLE + 1].copy()
            for k in range(1, SHINGLE):
                g = g * _MIX + h[k:len(h) - SHINGLE + 1 + k]
        else:
            g = np.array([xxhash.xxh64_intdigest(" ".join(words).encode())], np.uint64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2^64 is the hash family
            x = np.multiply.outer(self.a, g)
            x += self.b[:, None]
            return x.min(axis=1)

    def keys(self, words: list[str]) -> np.ndarray:
        sig = self.signature(words)[:self.bands * self.rows].reshape(self.bands, self.rows)
        return np.array([xxhash.xxh64_intdigest(row.tobytes(), seed=i)
                         for i, row in enumerate(sig)], np.uint64)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) from datasketch for a Jaccard threshold, weighted towards recall."""
    try:
        from datasketch import MinHashLSH  # noqa: lazy (the optional 'data' extra)
    except ImportError:
        raise ValueError("data.clean.dedup='near' needs datasketch: `pip install "
                         "'lmjax[data]'`, or set data.clean.dedup='exact'.") from None

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
    return lsh.b, lsh.r


class Deduper:
    """Exact and near-duplicate detection over the documents seen so far (both splits)."""

    def __init__(self, near: bool):
        self.near = near
        self.exact: set[int] = set()
        self.bands: set[int] = set()

    def check(self, exact: int, keys: np.ndarray) -> str:
        """'exact_duplicate', 'near_duplicate', or '' (then the document is remembered)."""
        if exact in self.exact:
            return "exact_duplicate"
        keys = keys.tolist()
        if self.near and any(k in self.bands for k in keys):
            return "near_duplicate"
        self.exact.add(exact)
        if self.near:
            self.bands.update(keys)
        return ""
