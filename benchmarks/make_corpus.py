"""A synthetic pretraining corpus of any size from the Shakespeare texts, with planted exact and
near duplicates whose ground truth is kept in each record (for benchmarks/data_pipeline.py).

    python benchmarks/make_corpus.py --mb=1000 --out=/tmp/corpus/c1000.jsonl

Each line is {"id", "text", "kind", "of"}: 'unique' documents are 40-400 lines drawn at random
from the whole corpus (lines of 4+ words) with 5% of their words swapped for random corpus
words, so that two unique documents share almost no word 5-grams; 'exact' copies an earlier
unique document; 'near' is an earlier unique document with one word in ~30 changed and its
Jaccard similarity on word 5-grams checked to be in [0.8, 0.95]. `of` names the original.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from lmjax.data import shakespeare  # noqa: E402


def _shingles(words: list[str]) -> set:
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}


def jaccard(a: str, b: str) -> float:
    x, y = _shingles(a.split()), _shingles(b.split())
    return len(x & y) / max(1, len(x | y))


def _near(rng, text: str, vocab: list[str]) -> str | None:
    words = text.split(" ")
    for every in (30, 45, 60):
        out = list(words)
        for i in range(int(rng.integers(0, every)), len(out), every):
            out[i] = vocab[int(rng.integers(len(vocab)))]
        t = " ".join(out)
        if 0.8 <= jaccard(text, t) <= 0.95:
            return t
    return None


def make(path: str, mb: float, seed: int = 0, dup_rate: float = 0.05,
         near_rate: float = 0.05) -> dict:
    """Writes the corpus; returns counts of each kind."""
    rng = np.random.default_rng(seed)
    lines = [line.strip() for text in shakespeare.works().values()
             for line in text.split("\n") if len(line.split()) >= 4]
    vocab = sorted({w for line in lines[::7] for w in line.split()})
    recent: list[tuple[str, str]] = []  # (id, text) of unique documents to copy from
    counts = {"unique": 0, "exact": 0, "near": 0, "bytes": 0}
    target = int(mb * 1e6)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        while counts["bytes"] < target:
            roll = rng.random()
            kind, of = "unique", ""
            if recent and roll < dup_rate:
                of, text = recent[int(rng.integers(len(recent)))]
                kind = "exact"
            elif recent and roll < dup_rate + near_rate:
                of, original = recent[int(rng.integers(len(recent)))]
                text = _near(rng, original, vocab)
                kind = "near" if text is not None else "unique"
            if kind == "unique":
                picked = rng.integers(0, len(lines), int(rng.integers(40, 400)))
                words = "\n".join(lines[i] for i in picked).split(" ")
                for i in np.flatnonzero(rng.random(len(words)) < 0.05):
                    words[i] = vocab[int(rng.integers(len(vocab)))]
                text, of = " ".join(words), ""
            doc_id = f"d{sum(counts[k] for k in ('unique', 'exact', 'near'))}"
            if kind == "unique":
                recent.append((doc_id, text))
                if len(recent) > 5000:  # bounded memory; copies come from recent documents
                    recent.pop(int(rng.integers(len(recent))))
            f.write(json.dumps({"id": doc_id, "text": text, "kind": kind, "of": of}) + "\n")
            counts[kind] += 1
            counts["bytes"] += len(text)
    os.replace(path + ".tmp", path)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=1000, help="megabytes of text to write")
    p.add_argument("--out", default="/tmp/lmjax-corpus/corpus.jsonl")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(json.dumps(make(a.out, a.mb, a.seed)))


if __name__ == "__main__":
    main()
