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
    assert clean.quality(text, text.split(), RULES) == rule


def test_ordinary_prose_passes():
    text = ("When in the chronicle of wasted time I see descriptions of the fairest wights, "
            "and beauty making beautiful old rhyme in praise of ladies dead and lovely knights, "
            "then in the blazon of sweet beauty's best, of hand, of foot, of lip, of eye, of "
            "brow, I see their antique pen would have expressed even such a beauty as you "
            "master now.")
    assert clean.quality(text, text.split(), RULES) == ""


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    hasher = clean.MinHasher(128, 0, 0)
    errors = []
    for every in (5, 10, 20, 40):
        a = _passage(rng, 400)
        b = _perturb(rng, a, every)
        est = np.mean(hasher.signature(a.split()) == hasher.signature(b.split()))
        errors.append(abs(est - _jaccard(a, b)))
    assert max(errors) < 0.15  # 128 hashes: standard error below 0.045


def test_deduper_finds_planted_duplicates_and_keeps_unique_documents():
    rng = np.random.default_rng(1)
    bands, rows = clean.lsh_params(0.8, 128)
    hasher = clean.MinHasher(128, bands, rows)
    unique = [_passage(rng) for _ in range(300)]
    near = [_perturb(rng, u, 40) for u in unique[:100]]  # one word in 40 changed
    assert min(_jaccard(u, n) for u, n in zip(unique, near)) >= 0.8
    dedup = clean.Deduper(near=True)
    results = [dedup.check(clean.exact_key(t), hasher.keys(t.split()))
               for t in unique + near + unique[:50]]
    assert results[:300] == [""] * 300  # no unique document removed
    assert results[300:400].count("near_duplicate") >= 90
    assert results[400:] == ["exact_duplicate"] * 50
