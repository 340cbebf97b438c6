"""Small real tables that ship with scikit-learn (offline): diabetes (regression) and
breast cancer (binary classification).

A fixed 20% of rows is the test split; validation is carved from the rest (or is a fold in
cross-validation). Features are standardised with the mean and standard deviation of the
training rows only, so nothing about the held-out rows leaks into training; regression
targets likewise, and metrics are reported back in the target's own units.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from lmjax.data.sources import DatasetError
from lmjax.data.images import Examples, Split, hold_out

DATASETS = {"diabetes": "load_diabetes", "breast_cancer": "load_breast_cancer"}


@dataclasses.dataclass
class TableExamples(Examples):
    target_scale: float = 1.0
    target_shift: float = 0.0


def split_rows(n: int, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(rest, test) row indices: a fixed draw, the same for lmjax and the scikit-learn baseline."""
    order = np.random.default_rng(2024).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def raw_table(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from sklearn import datasets
    except ImportError:
        raise DatasetError(f"data.name={name!r} reads scikit-learn's bundled datasets: "
                           "pip install 'lmjax[baselines]' (or scikit-learn).") from None
    bunch = getattr(datasets, DATASETS[name])()
    names = list(getattr(bunch, "target_names", [])) if name != "diabetes" else []
    return bunch.data.astype(np.float64), bunch.target, [str(n) for n in names]


def load_table(cfg: ml_collections.ConfigDict) -> TableExamples:
    x, y, class_names = raw_table(cfg.name)
    rest, test = split_rows(len(y))
    rest_split = Split(x[rest], y[rest])
    train, val, how = hold_out(rest_split, cfg)
    mean, std = train.inputs.mean(0), train.inputs.std(0) + 1e-8

    def scale(s: Split, y_shift=0.0, y_scale=1.0) -> Split:
        labels = ((s.labels - y_shift) / y_scale).astype(np.float32) if not class_names \
            else s.labels.astype(np.int32)
        return Split(((s.inputs - mean) / std).astype(np.float32), labels)

    shift, spread = (0.0, 1.0) if class_names else (train.labels.mean(), train.labels.std())
    test_split = Split(x[test], y[test])
    kind = f"{len(class_names)} classes" if class_names else "regression"
    description = (f"{cfg.name} ({kind}, {x.shape[1]} features): {len(train)} training, "
                   f"{len(val)} validation ({how}), {len(test)} test rows; features "
                   "standardised on the training rows")
    return TableExamples(scale(train, shift, spread), scale(val, shift, spread),
                         scale(test_split, shift, spread), class_names, description,
                         target_scale=float(spread), target_shift=float(shift))
