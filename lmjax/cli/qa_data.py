"""Write the closed-book QA set built from the Shakespeare works pretraining reads, as JSONL.

    lmjax qa_data --out=runs/qa_data                   # train, val and shots .jsonl
    lmjax qa_data --reading --out=runs/qa_reading      # the open-book twin: train and val

Closed-book questions ask who speaks a line or in which play a character appears, answered
from what pretraining read; shots.jsonl holds three training questions for the few-shot
baseline. --reading writes the open-book twin instead: each prompt is a passage of 1-8
speeches followed by a question answered by a speaker in it. The split is by question, fixed
by --seed. How: lmjax/data/qa_shakespeare.py; fine-tuning on it: docs/finetune.md.
"""

from __future__ import annotations

from absl import flags

from lmjax.cli.common import require
from lmjax.data import qa_shakespeare

_OUT = flags.DEFINE_string("out", None, "The directory for train.jsonl and val.jsonl.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split into training and validation.")
_READING = flags.DEFINE_bool("reading", False, "The open-book set: a passage, then a question "
                             "on it.")


def main(args: list[str]) -> None:
    out = require(_OUT.value, "give --out: the directory to write the QA set to, e.g. "
                  "--out=runs/qa_data.")
    sizes = qa_shakespeare.write(out, _SEED.value, _READING.value)
    print(f"Wrote {sizes['train']} training and {sizes['val']} validation questions to "
          f"{out}/{{train,val}}.jsonl")
