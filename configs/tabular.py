"""Small tabular tasks from scikit-learn's bundled datasets, with an MLP.

    lmjax train --config=configs/tabular.py:diabetes        # regression, MSE
    lmjax train --config=configs/tabular.py:breast_cancer   # binary, log loss
    lmjax sklearn_baseline --config=configs/tabular.py:diabetes   # the linear reference
"""

import ml_collections

from lmjax.config import base_config
from lmjax.tasks import with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "diabetes") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.update(name=preset, val_size=60)
    c.model.update(name="mlp", hidden=(64,), dropout=0.1)
    c.train.update(num_steps=1500, batch_size=32, eval_every=100, log_every=100,
                   early_stopping_metric="loss", patience=0)
    c.train.label_smoothing = 0.0
    c.train.class_weights = ""
    c.optim.update(name="adamw", learning_rate=3e-3, warmup_steps=50, weight_decay=1e-2)
    c.checkpoint.every = 500
    c.mesh.data = 1                # a few hundred rows: one device is plenty
    c.log.progress_bar = False
    if preset == "diabetes":
        # 10 features, 442 rows, nearly linear: a narrow layer, a gentle rate, frequent checks.
        c.task = "regress"
        c.model.hidden = (16,)
        c.optim.learning_rate = 1e-3
        c.train.update(num_steps=1000, eval_every=20)
    elif preset == "breast_cancer":
        c.task = "classify"
        c.data.val_size = 80
    else:
        raise ValueError(f"unknown preset {preset!r}: use diabetes or breast_cancer")
    return c
