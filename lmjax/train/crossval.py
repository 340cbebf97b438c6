"""k-fold cross-validation: k ordinary runs, one per held-out fold, and their mean ± std."""

from __future__ import annotations

import json
import os
from typing import Callable

import ml_collections
import numpy as np

from lmjax.train.loop import train_and_evaluate


def fit(cfg: ml_collections.ConfigDict, workdir: str,
        on_eval: Callable[[int, dict], None] | None = None) -> dict:
    """What the commands run: one training run, or, with data.num_folds > 1 and data.fold -1,
    one run per fold (`cross_validate`)."""
    if cfg.data.num_folds > 1 and cfg.data.fold < 0:
        return cross_validate(cfg, workdir, on_eval)
    return train_and_evaluate(cfg, workdir, on_eval)


def cross_validate(cfg: ml_collections.ConfigDict, workdir: str, on_eval=None) -> dict:
    """Trains data.num_folds runs in <workdir>/fold_<i> (each resumable on its own, with
    data.fold=i) and writes the metrics of each and their mean and standard deviation to
    <workdir>/kfold.json."""
    k = cfg.data.num_folds
    folds = []
    for i in range(k):
        fold_cfg = ml_collections.ConfigDict(cfg.to_dict())
        fold_cfg.data.fold = i  # the task holds this fold out of its training examples
        print(f"=== fold {i + 1}/{k} ===")
        folds.append(train_and_evaluate(fold_cfg, os.path.join(workdir, f"fold_{i}"), on_eval))
    keys = [key for key in folds[0] if isinstance(folds[0][key], float)]
    summary = {key: float(np.mean([f[key] for f in folds])) for key in keys}
    summary.update({f"{key}_std": float(np.std([f[key] for f in folds])) for key in keys})
    print("Cross-validation over {} folds:\n{}".format(k, "\n".join(
        f"  {key}: {summary[key]:.4f} ± {summary[key + '_std']:.4f}" for key in keys
        if key.startswith(("val_", "test_")))))
    with open(os.path.join(workdir, "kfold.json"), "w") as f:
        json.dump({"folds": folds, "mean_std": summary}, f, indent=1)
    return summary
