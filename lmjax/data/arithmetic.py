"""Two-digit addition as a task with a checkable answer: SFT's and GRPO's records, with a
held-out split of problems never trained on.

    {"prompt": "47+38", "response": "85"}

Every pair (a, b) of two-digit numbers is a problem (8,100 of them); a seeded permutation holds
out `val` of them. `write` also saves a character tokenizer for them (the characters of SFT's
default template, the digits and '+'), so that a GPT can be trained from scratch on the records with
`data.tokenizer_file=<out>/tokenizer.json` (docs/posttraining.md):

    lmjax addition_data --out=runs/add   # train.jsonl, val.jsonl, tokenizer.json

`vocab_size` pads the tokenizer's table with characters no record uses, to a released model's
vocabulary (151,936 for configs/grpo.py:qwen3_0_6b): a model of that shape with random
weights then trains on the records, and any token it samples decodes, for throughput runs.
"""

from __future__ import annotations

import json
import os

import numpy as np

from lmjax.data import sft
from lmjax.data.tokenizers import CharTokenizer


def build(seed: int = 0, val: int = 500, low: int = 10, high: int = 99) -> dict[str, list]:
    """{'train': [...], 'val': [...]}: every a + b with low <= a, b <= high, split by problem."""
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    if not 0 < val < len(pairs):
        raise ValueError(f"val={val}: hold out between 1 and {len(pairs) - 1} problems.")
    order = np.random.default_rng(seed).permutation(len(pairs))
    records = [{"prompt": f"{a}+{b}", "response": str(a + b)} for a, b in
               (pairs[i] for i in order)]
    return {"train": records[val:], "val": records[:val]}


def tokenizer(vocab_size: int = 0) -> CharTokenizer:
    """The characters of every record rendered with SFT's default template and end marker;
    with `vocab_size`, padded to that many ids with characters from U+10000 on (unused)."""
    chars = CharTokenizer.train([sft.format_prompt(sft.DEFAULT_TEMPLATE, "0123456789+") +
                                 sft.DEFAULT_END]).chars
    if vocab_size and vocab_size < len(chars):
        raise ValueError(f"vocab_size={vocab_size}: the records need {len(chars)} ids.")
    pad = max(vocab_size - len(chars), 0)
    return CharTokenizer(chars + "".join(chr(0x10000 + i) for i in range(pad)))


def write(out: str, seed: int = 0, val: int = 500, vocab_size: int = 0) -> dict[str, int]:
    os.makedirs(out, exist_ok=True)
    sets = build(seed, val)
    for split, records in sets.items():
        with open(os.path.join(out, f"{split}.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    tokenizer(vocab_size).save(out)
    return {k: len(v) for k, v in sets.items()}
