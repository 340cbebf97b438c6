"""scikit-learn's linear models on exactly the split an lmjax tabular config trains on
(the command: lmjax sklearn_baseline --config=configs/tabular.py:diabetes).

Linear regression (for regression tasks) or logistic regression (for classification) is fitted
on the same standardised training rows and scored on the same test rows with lmjax's metrics.
"""

from __future__ import annotations

import ml_collections

from lmjax.data.tabular import load_table
from lmjax.eval import metrics


def linear_baseline(cfg: ml_collections.ConfigDict) -> dict:
    # scikit-learn is an optional extra (.[baselines]): imported when the baseline runs.
    from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: lazy

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
