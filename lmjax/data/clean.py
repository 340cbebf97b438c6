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
false positives). Words, their hashes and the signature are numpy passes over the document's
bytes (`Words`; a multiply-add hash family on 64 bits) rather than datasketch's per-shingle
Python loop, which cost a third of the tokenizer's time. The index keeps one 64-bit key per
band and document in `KeySet` (0.25 KB a document with the exact hash and the looser bands
between the splits) instead of datasketch's in-memory `MinHashLSH` (3.2 KB a document with
the same 10 bands, measured).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

RULES = ("min_words", "max_words", "mean_word_length", "alpha_words", "duplicate_lines")
SHINGLE = 5  # words per shingle
ACROSS_ROWS = 4  # rows per band of the looser banding between the splits (see Deduper)
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")  # one pass, not one per word
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0x100000001B3)  # odd: each byte's weight in a word's hash is distinct
_POWERS = np.ones(0, np.uint64)
_SPACE = np.zeros(256, bool)  # the ASCII characters str.split() cuts at
_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_LETTER = np.zeros(256, bool)
_LETTER[65:91] = _LETTER[97:123] = True


def normalize(text: str) -> str:
    """Unicode NFC, '\\n' line ends, no trailing spaces, at most one blank line in a row (and
    lone surrogates, which JSON allows, replaced: they cannot be written as UTF-8)."""
    if not text.isascii():  # (isascii is O(1))
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if " \n" in text or "\t\n" in text:  # (a substring test is ~40x cheaper than a regex pass)
        text = _TRAILING_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


class Words:
    """A document's words as spans of its UTF-8 bytes, cut at ASCII whitespace: for an ASCII
    text exactly `str.split()`'s words. Numpy passes over the bytes replace a Python call per
    word, which cost as much as a third of the tokenizer's time."""

    def __init__(self, text: str):
        self.data = np.frombuffer(text.encode(), np.uint8)
        self.space = _SPACE[self.data]
        edges = np.diff(self.space.view(np.int8), prepend=1, append=1)
        self.starts = np.flatnonzero(edges == -1)
        self.lengths = np.flatnonzero(edges == 1) - self.starts

    def __len__(self) -> int:
        return len(self.starts)

    def with_letter(self) -> int:
        """How many words hold an ASCII letter."""
        seen = np.concatenate([[0], np.cumsum(_LETTER[self.data], dtype=np.int64)])
        return int(np.count_nonzero(seen[self.starts + self.lengths] > seen[self.starts]))

    def hashes(self) -> np.ndarray:
        """A 64-bit hash per word: a polynomial over its bytes, mixed (splitmix64's finalizer)."""
        if not len(self):
            return np.zeros(0, np.uint64)
        offsets = np.cumsum(self.lengths) - self.lengths  # each word's first byte, in `inside`
        inside = self.data[~self.space].astype(np.uint64)
        rel = np.arange(len(inside)) - np.repeat(offsets, self.lengths)
        with np.errstate(over="ignore"):  # arithmetic modulo 2^64 is the hash
            h = np.add.reduceat(inside * _powers(int(self.lengths.max()))[rel], offsets)
            return _mix64(h + self.lengths.astype(np.uint64) * _MIX)


def _powers(n: int) -> np.ndarray:
    """_BASE ** k modulo 2^64 for k < n (kept, and grown by doubling)."""
    global _POWERS
    if len(_POWERS) < n:
        with np.errstate(over="ignore"):
            grown = np.cumprod(np.full(max(n, 2 * len(_POWERS)) - 1, _BASE, np.uint64))
            _POWERS = np.concatenate([np.ones(1, np.uint64), grown])
    return _POWERS


def _mix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def quality(text: str, c, words: Words | None = None) -> str:
    """The first rule the document breaks, or '' when it passes them all. An ASCII text is
    measured on `words` (numpy); any other by Python's Unicode rules (str.split, re)."""
    if text.isascii():
        words = words if words is not None else Words(text)
        n, chars = len(words), int(words.lengths.sum())
        alpha = words.with_letter
    else:
        split = text.split()
        n, chars = len(split), sum(map(len, split))
        alpha = lambda: n - len(_NO_LETTER_WORD.findall(text))  # noqa: E731
    if n < c.min_words:
        return "min_words"
    if n > c.max_words:
        return "max_words"
    if not c.min_mean_word_length <= chars / n <= c.max_mean_word_length:
        return "mean_word_length"
    if alpha() < c.min_alpha_words * n:
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
        self.a = rng.integers(1, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self.bands, self.rows = bands, rows

    def signature(self, words: Words) -> np.ndarray:
        h = words.hashes()
        with np.errstate(over="ignore"):  # arithmetic modulo 2^64 is the hash family
            if len(h) >= SHINGLE:  # a 5-gram's hash from its words' hashes, vectorised
                g = h[:len(h) - SHINGLE + 1].copy()
                for k in range(1, SHINGLE):
                    g = g * _MIX + h[k:len(h) - SHINGLE + 1 + k]
            else:  # fewer words than a shingle: the whole text is one
                g = np.zeros(1, np.uint64)
                for x in h:
                    g = g * _MIX + x
            x = np.multiply.outer(self.a, g)
            x += self.b[:, None]
            return x.min(axis=1)

    @property
    def num_keys(self) -> int:
        return self.bands + len(self.a) // ACROSS_ROWS

    def keys(self, words: Words) -> np.ndarray:
        """The `bands` LSH keys, then the `len(self.a) // ACROSS_ROWS` keys of the looser
        banding that `Deduper` applies between the splits (`num_keys` in all)."""
        sig = self.signature(words)
        across = len(sig) // ACROSS_ROWS
        rows = [*sig[:self.bands * self.rows].reshape(self.bands, self.rows),
                *sig[:across * ACROSS_ROWS].reshape(across, ACROSS_ROWS)]
        return np.array([xxhash.xxh64_intdigest(row.tobytes(), seed=i)
                         for i, row in enumerate(rows)], np.uint64)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) from datasketch for a Jaccard threshold, weighted towards recall."""
    try:
        from datasketch import MinHashLSH  # noqa: lazy (the optional 'data' extra)
    except ImportError:
        raise ValueError("data.clean.dedup='near' needs datasketch: `pip install "
                         "'lmjax[data]'`, or set data.clean.dedup='exact'.") from None

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
    return lsh.b, lsh.r


class KeySet:
    """A set of 64-bit keys in about 8 bytes each: a sorted array, plus a Python set of recent
    keys merged into it when it outgrows 1/32 of the array (a Python set costs ~70 bytes a
    key; merging costs a pass over the array, ~30 merges per e-fold of keys)."""

    def __init__(self):
        self.sorted = np.zeros(0, np.uint64)
        self.recent: set[int] = set()

    def __len__(self) -> int:
        return len(self.sorted) + len(self.recent)

    def any(self, keys: list[int]) -> bool:
        """Whether any of `keys` is in the set (one search of the array for all of them)."""
        if not self.recent.isdisjoint(keys):
            return True
        if not len(self.sorted):
            return False
        keys = np.asarray(keys, np.uint64)
        at = np.minimum(np.searchsorted(self.sorted, keys), len(self.sorted) - 1)
        return bool((self.sorted[at] == keys).any())

    def update(self, keys: list[int]) -> None:
        self.recent.update(keys)
        if len(self.recent) > max(1 << 16, len(self.sorted) >> 5):
            new = np.sort(np.fromiter(self.recent, np.uint64, len(self.recent)))
            self.sorted = np.insert(self.sorted, np.searchsorted(self.sorted, new), new)
            self.recent.clear()


class Deduper:
    """Exact and near-duplicate detection over the documents seen so far (both splits).

    Between the splits a looser banding applies as well (rows of ACROSS_ROWS: 16 bands of 4
    with 64 hashes), since a validation document near a training one is a leak, not only
    waste: at Jaccard 0.8 the default bands miss a pair with probability 0.048, these with
    0.0003; at 0.5 they also catch 64% of pairs, which costs only validation documents and
    their near-copies in training."""

    def __init__(self, near: bool, bands: int = 0):
        self.near, self.num_bands = near, bands
        self.exact = KeySet()  # the high 64 bits of each kept document's 128-bit hash
        self.bands = KeySet()  # every band key of every kept document
        self.across = (KeySet(), KeySet())  # the looser keys of kept (train, val) documents

    def check(self, exact: int, keys: np.ndarray, val: bool = False) -> str:
        """'exact_duplicate', 'near_duplicate', 'near_duplicate_across_splits' or '' (then
        the document is remembered). `keys` are MinHasher.keys."""
        exact = [exact >> 64]
        if self.exact.any(exact):
            return "exact_duplicate"
        keys = keys.tolist()
        near, across = keys[:self.num_bands], keys[self.num_bands:]
        if self.near and self.bands.any(near):
            return "near_duplicate"
        if self.near and self.across[not val].any(across):
            return "near_duplicate_across_splits"
        self.exact.update(exact)
        if self.near:
            self.bands.update(near)
            self.across[val].update(across)
        return ""
