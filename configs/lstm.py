"""A character-level LSTM (or GRU) language model on the same Shakespeare split and tokenizer
as the GPT default, for comparison at the same wall-clock budget (docs/baselines.md).

    lmjax train --config=configs/lstm.py
    lmjax train --config=configs/lstm.py --config.model.name=gru
"""

import os

import ml_collections

from lmjax.config import load_config
from lmjax.tasks import with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    # Everything but the model is the GPT default's (or its tiny preset's): data, batches,
    # schedule, evaluation and samples, so the two compare like for like.
    gpt = os.path.join(os.path.dirname(__file__), "gpt.py")
    c = load_config(f"{gpt}:{'tiny' if preset == 'tiny' else 'cpu'}")
    block_size = c.model.block_size
    c.model = ml_collections.ConfigDict(dict(
        name="lstm",               # 'lstm' | 'gru'
        vocab_size=0,              # 0: taken from the tokenizer
        block_size=block_size,     # training window; the state starts from zeros in each window
        d_model=256 if preset == "cpu" else 32,  # hidden units per layer
        num_layers=1,
        dropout=0.0))
    c.optim.update(name="adamw", learning_rate=4e-3, weight_decay=0.0)
    if preset == "cpu":
        # The recurrence is 128 small sequential matmuls: on XLA's CPU backend one device runs
        # it faster than two, and a wider batch amortises each time step. 1,400 steps take about
        # the GPT default's wall time here (docs/baselines.md#results).
        c.mesh.host_cpu_devices = 1
        c.train.update(batch_size=64, num_steps=1400)
    if preset not in ("cpu", "tiny"):
        raise ValueError(f"unknown preset {preset!r}: use cpu or tiny")
    return c
