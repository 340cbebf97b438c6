"""Cleaning rules, exact and near-duplicate detection (MinHash LSH on word 5-grams)."""

import types

import numpy as np
import pytest

from lmjax.config import text_data
from lmjax.data import clean

RULES = types.SimpleNamespace(**text_data().clean.to_dict())


def _passage(rng, n=120):
    vocab = [f"w{i}" for i in range(5000)]
    return " ".join(rng.choice(vocab, n))


def _shingles(text):
    w = text.split()
    return {tuple(w[i:i + 5]) for i in range(len(w) - 4)}


def _jaccard(a, b):
    a, b = _shingles(a), _shingles(b)
    return len(a & b) / len(a | b)


def _perturb(rng, text, every):
    words = text.split()
    for i in range(0, len(words), every):
        words[i] = "changed"
    return " ".join(words)


def test_normalize():
    assert clean.normalize("Cafe\u0301  \r\nline\t\n\n\n\n\nend  ") == "Caf\u00e9\nline\n\nend"
    assert clean.normalize("lone \ud800 surrogate") == "lone ? surrogate"


@pytest.mark.parametrize("text, rule", [
    ("too few words here", "min_words"),
    (" ".join(["a"] * 60), "mean_word_length"),
    (" ".join(["extraordinarily-long-words"] * 60), "mean_word_length"),
    (" ".join(["1234 5678 word"] * 30), "alpha_words"),
    ("\n".join(["the same line of text again"] * 8 + ["one other line here"] * 12),
     "duplicate_lines"),
])
def test_each_quality_rule(text, rule):
    assert clean.quality(text, RULES) == rule


@pytest.mark.parametrize("text, rule", [
    ("fünf " * 60, ""),
    ("ü " * 60, "mean_word_length"),
    ("—123 4567 wörter " * 30, "alpha_words"),  # a dash is no letter in Unicode either
])
def test_quality_rules_on_unicode_text(text, rule):
    assert clean.quality(text, RULES) == rule


def test_words_are_str_split_on_ascii_text():
    """The numpy word spans (quality rules, MinHash) against Python's own split and regex."""
    rng = np.random.default_rng(2)
    alphabet = list("ab1_.-,Z9") + ["\t", "\n", " ", "\x0b", "\x1c", "\x1f", "\r"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet, rng.integers(0, 40)))
        words = clean.Words(text)
        spans = [text[s:s + n] for s, n in zip(words.starts, words.lengths)]
        assert spans == text.split()
        assert words.with_letter() == len(spans) - len(clean._NO_LETTER_WORD.findall(text))
        by_word = dict(zip(spans, words.hashes().tolist()))  # one hash per distinct word
        assert all(by_word[w] == h for w, h in zip(spans, words.hashes().tolist()))
        assert len(set(by_word.values())) == len(by_word)


def test_ordinary_prose_passes():
    text = ("When in the chronicle of wasted time I see descriptions of the fairest wights, "
            "and beauty making beautiful old rhyme in praise of ladies dead and lovely knights, "
            "then in the blazon of sweet beauty's best, of hand, of foot, of lip, of eye, of "
            "brow, I see their antique pen would have expressed even such a beauty as you "
            "master now.")
    assert clean.quality(text, RULES) == ""


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    hasher = clean.MinHasher(128, 0, 0)
    errors = []
    for every in (5, 10, 20, 40):
        a = _passage(rng, 400)
        b = _perturb(rng, a, every)
        est = np.mean(hasher.signature(clean.Words(a)) == hasher.signature(clean.Words(b)))
        errors.append(abs(est - _jaccard(a, b)))
    assert max(errors) < 0.15  # 128 hashes: standard error below 0.045


def test_deduper_finds_planted_duplicates_and_keeps_unique_documents():
    rng = np.random.default_rng(1)
    bands, rows = clean.lsh_params(0.8, 128)
    hasher = clean.MinHasher(128, bands, rows)
    unique = [_passage(rng) for _ in range(300)]
    near = [_perturb(rng, u, 40) for u in unique[:100]]  # one word in 40 changed
    assert min(_jaccard(u, n) for u, n in zip(unique, near)) >= 0.8
    dedup = clean.Deduper(near=True, bands=bands)
    results = [dedup.check(clean.exact_key(t), hasher.keys(clean.Words(t)))
               for t in unique + near + unique[:50]]
    assert results[:300] == [""] * 300  # no unique document removed
    assert results[300:400].count("near_duplicate") >= 90
    assert results[400:] == ["exact_duplicate"] * 50


def test_the_looser_bands_apply_only_between_the_splits():
    """Pairs at Jaccard 0.61 (below the near-duplicate threshold) stay within a split but
    not across it: a validation document that close to a training one is a leak."""
    rng = np.random.default_rng(3)
    bands, rows = clean.lsh_params(0.8, 64)
    hasher = clean.MinHasher(64, bands, rows)
    originals = [_passage(rng, 400) for _ in range(40)]
    variants = [_perturb(rng, t, 20) for t in originals]
    assert all(0.55 < _jaccard(a, b) < 0.65 for a, b in zip(originals, variants))
    keys = lambda t: (clean.exact_key(t), hasher.keys(clean.Words(t)))  # noqa: E731
    within, across = clean.Deduper(True, bands), clean.Deduper(True, bands)
    for a, b in zip(originals, variants):
        within.check(*keys(a), val=False)
        across.check(*keys(a), val=False)
    kept_within = [within.check(*keys(b), val=False) for b in variants]
    caught_across = [across.check(*keys(b), val=True) for b in variants]
    # expected: the strict bands keep 59% of such pairs (24 of 40), the loose catch 91% (36)
    assert kept_within.count("") >= 15
    assert "near_duplicate_across_splits" in caught_across
    assert len(caught_across) - caught_across.count("") >= 32


def test_keyset_answers_like_a_python_set_across_merges():
    rng = np.random.default_rng(4)
    keys, reference = clean.KeySet(), set()
    for _ in range(1600):  # 160,000 keys: merged into the sorted array twice or more
        batch = rng.integers(0, 2**64, 100, dtype=np.uint64).tolist()
        absent = rng.integers(0, 2**64, 3, dtype=np.uint64).tolist()
        assert keys.any(absent) == (not reference.isdisjoint(absent))
        assert keys.any(batch[:1] + absent) == (batch[0] in reference)
        keys.update(batch)
        reference.update(batch)
        assert keys.any(absent + batch[-1:])
    seen = list(reference)
    assert len(keys.sorted) >= 65536 and len(keys) == len(reference)
    assert all(keys.any([k]) for k in seen[::997])
    assert keys.sorted.dtype == np.uint64 and (np.diff(keys.sorted) > 0).all()
