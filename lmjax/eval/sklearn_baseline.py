"""scikit-learn's linear models on exactly the split an lmjax tabular config trains on:

    python -m lmjax.eval.sklearn_baseline --config=configs/tabular.py:diabetes
    python -m lmjax.eval.sklearn_baseline --config=configs/tabular.py:breast_cancer

Linear regression (for regression tasks) or logistic regression (for classification) is fitted
on the same standardised training rows and scored on the same test rows with lmjax's metrics.
"""

from __future__ import annotations

import json

import ml_collections
from absl import app
from ml_collections import config_flags

from lmjax.data.tabular import load_table
from lmjax.eval import metrics

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/tabular.py config.")


def linear_baseline(cfg: ml_collections.ConfigDict) -> dict:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    data = load_table(cfg.data)
    train, test = data.train, data.test
    if data.class_names:
        model = LogisticRegression(max_iter=5000).fit(train.inputs, train.labels)
        probs = model.predict_proba(test.inputs)
        report = metrics.classification_report(probs, test.labels, data.class_names)
        return {k: v for k, v in report.items() if isinstance(v, float)}
    model = LinearRegression().fit(train.inputs, train.labels)
    preds = model.predict(test.inputs) * data.target_scale + data.target_shift
    targets = test.labels * data.target_scale + data.target_shift
    return metrics.regression_report(preds, targets)


def main(argv):
    del argv
    result = linear_baseline(_CONFIG.value)
    print(json.dumps({f"test_{k}": round(v, 4) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    app.run(main)
