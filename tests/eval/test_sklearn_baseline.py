"""The scikit-learn linear baseline of the tabular configs (lmjax/eval/linear.py),
checked against scikit-learn fitted and scored directly on the same arrays, and its command."""

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import datasets  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402

from lmjax.data.tabular import load_table  # noqa: E402
from lmjax.eval.linear import linear_baseline  # noqa: E402


def test_diabetes_matches_linear_regression_fitted_directly(load_config):
    cfg = load_config("diabetes", "tabular.py")
    got = linear_baseline(cfg)
    data = load_table(cfg.data)
    model = LinearRegression().fit(data.train.inputs, data.train.labels)
    preds = model.predict(data.test.inputs) * data.target_scale + data.target_shift
    targets = data.test.labels.astype(np.float64) * data.target_scale + data.target_shift
    # The targets are back in the dataset's own units: its integer disease-progression scores.
    raw = datasets.load_diabetes().target
    np.testing.assert_allclose(targets, np.round(targets), atol=1e-3)
    assert np.isin(np.round(targets), raw).all() and len(targets) == round(0.2 * len(raw))
    want = {"mse": skm.mean_squared_error(targets, preds),
            "mae": skm.mean_absolute_error(targets, preds),
            "r2": skm.r2_score(targets, preds)}
    want["rmse"] = np.sqrt(want["mse"])
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6), k
    assert 0.2 < got["r2"] < 0.8  # a real fit, not a constant


def test_breast_cancer_matches_logistic_regression_fitted_directly(load_config):
    cfg = load_config("breast_cancer", "tabular.py")
    got = linear_baseline(cfg)
    data = load_table(cfg.data)
    model = LogisticRegression(max_iter=5000).fit(data.train.inputs, data.train.labels)
    probs = model.predict_proba(data.test.inputs)
    labels, predicted = data.test.labels, probs.argmax(1)
    want = {"accuracy": skm.accuracy_score(labels, predicted),
            "log_loss": skm.log_loss(labels, probs),
            "roc_auc": skm.roc_auc_score(labels, probs[:, 1])}
    for avg in ("macro", "micro"):
        want[f"precision_{avg}"] = skm.precision_score(labels, predicted, average=avg)
        want[f"recall_{avg}"] = skm.recall_score(labels, predicted, average=avg)
        want[f"f1_{avg}"] = skm.f1_score(labels, predicted, average=avg)
    # Multi-class Brier sums both classes' squared errors: twice scikit-learn's binary score.
    want["brier"] = 2 * skm.brier_score_loss(labels, probs[:, 1])
    conf, hit = probs.max(1), (predicted == labels)  # ECE over 15 bins (lo, hi], by loop
    want["ece"] = sum(abs(hit[m].mean() - conf[m].mean()) * m.sum() for lo in range(15)
                      if (m := (conf > lo / 15) & (conf <= (lo + 1) / 15)).any()) / len(labels)
    assert set(got) == set(want)  # the float metrics only (no per-class lists)
    for k in want:  # ECE averages confidences that ours holds in float32
        assert got[k] == pytest.approx(want[k], rel=1e-4 if k == "ece" else 1e-6), k
    assert got["accuracy"] > 0.9


def test_the_command_prints_the_test_metrics_as_json(load_config, run_module):
    r = run_module("sklearn_baseline", "--config=configs/tabular.py:diabetes")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    want = linear_baseline(load_config("diabetes", "tabular.py"))
    assert set(printed) == {f"test_{k}" for k in want} == {"test_mse", "test_rmse",
                                                           "test_mae", "test_r2"}
    for k, v in want.items():
        assert printed[f"test_{k}"] == round(v, 4)
