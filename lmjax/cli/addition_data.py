"""Write two-digit addition problems as JSONL, with a held-out split, and a tokenizer for them.

    lmjax addition_data --out=runs/add          # train.jsonl, val.jsonl, tokenizer.json
    lmjax addition_data --out=runs/add-qwen3 --vocab_size=151936   # for configs/grpo.py:qwen3_0_6b

Every a + b of two-digit numbers is a problem ({"prompt": "47+38", "response": "85"}); --val of
them, drawn by --seed, are held out and never trained on. tokenizer.json is a character table
for them in SFT's default template, so a GPT can be trained from scratch on them
(--config.data.tokenizer_file); --vocab_size pads it to a released model's vocabulary, for
random-weight runs of that shape. How: lmjax/data/arithmetic.py; SFT then GRPO on them:
docs/posttraining.md.
"""

from __future__ import annotations

from absl import flags

from lmjax.cli.common import require
from lmjax.data import arithmetic

_OUT = flags.DEFINE_string("out", None, "The directory for the records and tokenizer.json.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split into training and held-out problems.")
_VAL = flags.DEFINE_integer("val", 500, "Problems held out.")
_VOCAB = flags.DEFINE_integer("vocab_size", 0, "Pad the tokenizer to this many ids with unused "
                              "characters (0: only those the records use).")


def main(args: list[str]) -> None:
    out = require(_OUT.value, "give --out: the directory to write the problems to, e.g. "
                  "--out=runs/add.")
    sizes = arithmetic.write(out, _SEED.value, _VAL.value, _VOCAB.value)
    print(f"Wrote {sizes['train']} training and {sizes['val']} held-out problems and "
          f"tokenizer.json to {out}")
