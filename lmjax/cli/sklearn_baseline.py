"""scikit-learn's linear models on exactly the split an lmjax tabular config trains on.

    lmjax sklearn_baseline --config=configs/tabular.py:diabetes
    lmjax sklearn_baseline --config=configs/tabular.py:breast_cancer

Linear regression (for regression tasks) or logistic regression (for classification) is fitted
on the same standardised training rows and scored on the same test rows with lmjax's metrics.
"""

from __future__ import annotations

import json

from ml_collections import config_flags

from lmjax.cli.common import require
from lmjax.eval.linear import linear_baseline

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/tabular.py config.")


def main(args: list[str]) -> None:
    cfg = require(_CONFIG.value, "give --config, e.g. --config=configs/tabular.py:diabetes")
    result = linear_baseline(cfg)
    print(json.dumps({f"test_{k}": round(v, 4) for k, v in result.items()}, indent=1))
