"""Direct preference optimisation (DPO, IPO) of a GPT run on chosen/rejected answers.

    lmjax train --config=configs/dpo.py --config.init_from=runs/qa-sft \\
        --config.data.train_file=runs/qa_pairs/train.jsonl \\
        --config.data.val_file=runs/qa_pairs/val.jsonl --workdir=runs/qa-dpo
    lmjax train --config=configs/dpo.py --config.lora.rank=8 ...  # LoRA adapters only
    lmjax train --config=configs/dpo.py:tiny ...       # seconds: smoke test

Records are TRL's preference shapes (lmjax/data/preferences.py), one per line of
data.train_file. Everything but the data and the loss is configs/sft.py's (template, end marker,
model shape, LoRA section): the model must have the init_from run's shape, whose tokenizer is
used. The walkthrough with figures is docs/posttraining.md.
"""

import os

import ml_collections

from lmjax.config import load_config
from lmjax.tasks import with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    sft = os.path.join(os.path.dirname(__file__), "sft.py")
    c = load_config(f"{sft}:{preset}")  # SFT's cpu or tiny preset
    c.task = "dpo"
    c.data.name = "jsonl"          # {'prompt','chosen','rejected'} (strings or messages)

    c.dpo = ml_collections.ConfigDict()
    c.dpo.loss = "sigmoid"         # 'sigmoid' (DPO) | 'ipo'
    c.dpo.beta = 0.1               # pull towards the reference (IPO: its margin is 1/(2 beta))

    c.sft.packing = False          # pairs are padded, one answer to a row
    c.train.update(num_steps=300, batch_size=16, eval_every=100, eval_examples=0)
    c.optim.update(learning_rate=1e-4, warmup_steps=20)
    c.checkpoint.every = 100
    if preset == "tiny":
        c.train.update(num_steps=6, batch_size=8, eval_every=3, eval_examples=8)
        c.optim.warmup_steps = 2
        c.checkpoint.every = 3
    return c
