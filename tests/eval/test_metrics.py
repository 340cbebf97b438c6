"""Every metric against scikit-learn, on random and edge-case inputs."""

import numpy as np
import pytest
from sklearn import metrics as skm

from lmjax.eval import metrics


def _random_case(seed, n=200, c=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, c, n)
    return probs, labels


def _never_predicting_class_3(probs, labels):
    probs = probs * np.array([1.0, 1.0, 1.0, 0.01])
    return probs / probs.sum(1, keepdims=True), labels


CASES = {
    "random": _random_case(0),
    "random_5": _random_case(1, n=57, c=5),
    # Class 3 is never predicted (its probability is always the smallest).
    "never_predicted": _never_predicting_class_3(*_random_case(2)),
    # Every true label is the same class; other classes are still predicted.
    "one_true_class": (_random_case(3)[0], np.zeros(200, np.int64)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_classification_metrics_match_scikit_learn(name):
    probs, labels = CASES[name]
    c = probs.shape[1]
    preds = probs.argmax(1)
    report = metrics.classification_report(probs, labels)
    kw = dict(labels=list(range(c)), zero_division=0)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    for avg in ("macro", "micro"):
        assert report[f"precision_{avg}"] == pytest.approx(
            skm.precision_score(labels, preds, average=avg, **kw))
        assert report[f"recall_{avg}"] == pytest.approx(
            skm.recall_score(labels, preds, average=avg, **kw))
        assert report[f"f1_{avg}"] == pytest.approx(skm.f1_score(labels, preds, average=avg, **kw))
    per_class_f1 = skm.f1_score(labels, preds, average=None, **kw)
    assert [report["per_class"][str(i)]["f1"] for i in range(c)] == pytest.approx(per_class_f1)
    assert report["confusion_matrix"] == skm.confusion_matrix(labels, preds,
                                                              labels=list(range(c))).tolist()
    assert report["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=list(range(c))))
    present = np.unique(labels)
    if len(present) > 1:
        # scikit-learn's one-vs-rest needs every class present; compare on the present ones.
        expected = np.mean([skm.roc_auc_score(labels == k, probs[:, k]) for k in present])
        assert report["roc_auc"] == pytest.approx(expected)
    else:
        assert np.isnan(report["roc_auc"])


def test_multiclass_auc_equals_scikit_learns_one_vs_rest():
    probs, labels = CASES["random"]
    assert metrics.roc_auc(probs, labels) == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def test_binary_auc_with_ties_and_weights():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 5, 300) / 4.0  # many tied scores
    labels = (rng.random(300) < 0.3 + 0.4 * scores).astype(int)
    w = rng.random(300)
    assert metrics.roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores))
    assert metrics.roc_auc(scores, labels, w) == pytest.approx(
        skm.roc_auc_score(labels, scores, sample_weight=w))
    two_column = np.stack([1 - scores, scores], 1)
    assert metrics.roc_auc(two_column, labels) == pytest.approx(skm.roc_auc_score(labels, scores))
    assert metrics.log_loss(np.clip(scores, 0.01, 0.99), labels) == pytest.approx(
        skm.log_loss(labels, np.clip(scores, 0.01, 0.99)))


def test_weighted_confusion_matrix():
    labels, preds = np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2])
    w = np.array([1.0, 0.5, 2.0, 1.0])
    assert metrics.confusion_matrix(labels, preds, 3, w).tolist() == skm.confusion_matrix(
        labels, preds, sample_weight=w).tolist()


def test_regression_metrics_and_perplexity():
    rng = np.random.default_rng(5)
    y, p = rng.normal(size=50), rng.normal(size=50)
    assert metrics.mse(p, y) == pytest.approx(skm.mean_squared_error(y, p))
    assert metrics.mae(p, y) == pytest.approx(skm.mean_absolute_error(y, p))
    assert metrics.r2(p, y) == pytest.approx(skm.r2_score(y, p))
    assert metrics.perplexity(np.log(84.0)) == pytest.approx(84.0)
