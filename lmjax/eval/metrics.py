"""The evaluation metrics of the field, computed once over a whole evaluation set.

Every function takes gathered NumPy arrays (all examples, all devices), because macro averages,
ROC-AUC and confusion matrices cannot be averaged batch by batch. Definitions follow
scikit-learn's (the tests compare against it): a class with no predicted or no true examples
contributes 0 to a precision / recall / F1 average instead of NaN.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """[true, predicted] counts (weighted sums when weights are given)."""
    cm = np.zeros((num_classes, num_classes), np.float64)
    np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1.0 if weights is None else weights)
    return cm


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class, macro and micro precision, recall and F1 from a confusion matrix."""
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision, recall = _safe_divide(tp, predicted), _safe_divide(tp, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    # Micro averages pool every decision: for single-label tasks all three equal accuracy.
    micro = float(tp.sum() / max(cm.sum(), 1e-12))
    return {"precision": precision, "recall": recall, "f1": f1,
            "precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
            "f1_macro": float(f1.mean()), "precision_micro": micro, "recall_micro": micro,
            "f1_micro": micro}


def _binary_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a positive outranks a negative (ties: 1/2)."""
    order = np.argsort(scores, kind="mergesort")
    scores, positive, weights = scores[order], positive[order], weights[order]
    # Group tied scores; within a group a positive beats half of the group's negatives.
    _, starts = np.unique(scores, return_index=True)
    pos_w = np.add.reduceat(weights * positive, starts)
    neg_w = np.add.reduceat(weights * ~positive, starts)
    neg_below = np.concatenate([[0.0], np.cumsum(neg_w)[:-1]])
    total_pos, total_neg = pos_w.sum(), neg_w.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")  # undefined with one class only (scikit-learn raises)
    return float((pos_w * (neg_below + neg_w / 2)).sum() / (total_pos * total_neg))


def roc_auc(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Binary AUC from the positive class's score, or the macro one-vs-rest AUC over classes.

    Classes absent from `labels` are skipped in the one-vs-rest average (their AUC is undefined).
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    if probs.ndim == 1 or probs.shape[1] == 2:
        return _binary_auc(probs if probs.ndim == 1 else probs[:, 1], labels == 1, w)
    aucs = [_binary_auc(probs[:, c], labels == c, w) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def log_loss(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
             eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped away from 0)."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim == 1:  # binary: the positive class's probability
        probs = np.stack([1 - probs, probs], axis=1)
    p = np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)
    return float(np.average(-np.log(p), weights=weights))


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15,
                     weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Equal-width confidence bins (lo, hi] of the top-class probability: each bin's weight,
    mean confidence and accuracy (0 where empty), as Guo et al. (2017) define them."""
    probs = np.asarray(probs, np.float64)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    confidence, correct = probs.max(1), (probs.argmax(1) == np.asarray(labels)).astype(float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, w, bins)
    return {"count": count,
            "confidence": _safe_divide(np.bincount(index, w * confidence, bins), count),
            "accuracy": _safe_divide(np.bincount(index, w * correct, bins), count)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15,
                               weights: np.ndarray | None = None) -> float:
    """ECE: the bins' |accuracy - confidence| weighted by their share of examples."""
    b = calibration_bins(probs, labels, bins, weights)
    return float((b["count"] * np.abs(b["accuracy"] - b["confidence"])).sum()
                 / max(b["count"].sum(), 1e-12))


def brier_score(probs: np.ndarray, labels: np.ndarray,
                weights: np.ndarray | None = None) -> float:
    """Multi-class Brier score: the mean over examples of the squared distance, summed over
    classes, between the probabilities and the one-hot label (scikit-learn's, for C > 2)."""
    probs = np.asarray(probs, np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(np.average(((probs - onehot) ** 2).sum(1), weights=weights))


def perplexity(mean_nll: float) -> float:
    """exp of the mean negative log-likelihood per token (in nats)."""
    return float(np.exp(mean_nll))


def mse(preds: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((np.asarray(preds, np.float64) - targets) ** 2))


def mae(preds: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(preds, np.float64) - targets)))


def r2(preds: np.ndarray, targets: np.ndarray) -> float:
    targets = np.asarray(targets, np.float64)
    return 1.0 - mse(preds, targets) / float(np.var(targets))


def regression_report(preds: np.ndarray, targets: np.ndarray) -> dict:
    """MSE, RMSE, MAE and R² of predictions, in the targets' own units."""
    err = mse(preds, targets)
    return {"mse": err, "rmse": float(np.sqrt(err)), "mae": mae(preds, targets),
            "r2": r2(preds, targets)}


def classification_report(probs: np.ndarray, labels: np.ndarray,
                          class_names: list[str] | None = None) -> dict:
    """Every classification metric from predicted probabilities [N, C] and true labels [N].

    Scalars are plain floats (logged as curves); per-class values and the confusion matrix are
    lists under their own keys (logged as text and images).
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    num_classes = probs.shape[1]
    cm = confusion_matrix(labels, probs.argmax(1), num_classes)
    prf = precision_recall_f1(cm)
    names = class_names or [str(c) for c in range(num_classes)]
    report = {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
              "log_loss": log_loss(probs, labels), "roc_auc": roc_auc(probs, labels),
              "ece": expected_calibration_error(probs, labels),
              "brier": brier_score(probs, labels)}
    report.update({k: v for k, v in prf.items() if np.ndim(v) == 0})
    report["per_class"] = {
        name: {"precision": float(prf["precision"][c]), "recall": float(prf["recall"][c]),
               "f1": float(prf["f1"][c]), "accuracy": float(prf["recall"][c]),
               "support": int(cm[c].sum())}
        for c, name in enumerate(names)}
    report["confusion_matrix"] = cm.astype(np.int64).tolist()
    # The reliability diagram's 15 bins (lmjax/eval/calibration.py draws them).
    report["reliability"] = {k: v.tolist() for k, v in calibration_bins(probs, labels).items()}
    return report
