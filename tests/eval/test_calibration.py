"""ECE, Brier and NLL against independent formulas (a NumPy loop, scikit-learn), temperature
scaling on a deliberately over-confident toy, and the reliability diagram."""

import numpy as np
import pytest
import scipy.special
from sklearn.metrics import brier_score_loss, log_loss

from lmjax.eval import calibration, metrics


@pytest.fixture(scope="module")
def toy():
    """Labels drawn from softmax(true logits); the model reports 4x those logits, so it is
    over-confident (its best temperature is about 4) but ranks classes correctly."""
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 5))
    p = scipy.special.softmax(true_logits, 1)
    labels = np.array([rng.choice(5, p=row) for row in p])
    return 4.0 * true_logits, labels


def ece_reference(probs, labels, bins=15):
    conf, correct = probs.max(1), probs.argmax(1) == labels
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


def test_ece_brier_nll_match_independent_formulas(toy):
    logits, labels = toy
    probs = scipy.special.softmax(logits, 1)
    report = calibration.calibration_report(probs, labels)
    assert report["ece"] == pytest.approx(ece_reference(probs, labels), abs=1e-12)
    assert report["brier"] == pytest.approx(brier_score_loss(labels, probs, labels=range(5)))
    assert report["nll"] == pytest.approx(log_loss(labels, probs, labels=range(5)), rel=1e-6)
    assert report["ece"] > 0.1  # the toy is over-confident


def test_classification_report_logs_ece_and_brier(toy):
    logits, labels = toy
    probs = scipy.special.softmax(logits, 1)
    report = metrics.classification_report(probs, labels)
    assert {"accuracy", "log_loss", "roc_auc", "ece", "brier"} <= set(report)
    assert report["ece"] == pytest.approx(ece_reference(probs, labels))
    # A perfectly confident, always right model is perfectly calibrated.
    onehot = np.eye(5)[labels]
    assert metrics.expected_calibration_error(onehot, labels) == 0.0
    assert metrics.brier_score(onehot, labels) == 0.0


def test_temperature_scaling_fitted_on_validation_lowers_test_nll(toy):
    logits, labels = toy
    val, test = slice(0, 2000), slice(2000, None)
    t = calibration.fit_temperature(logits[val], labels[val])
    assert 3.0 < t < 5.5
    before = calibration.calibration_report(scipy.special.softmax(logits[test], 1), labels[test])
    after = calibration.calibration_report(calibration.scaled_probs(logits[test], t),
                                           labels[test])
    assert after["nll"] < before["nll"] - 0.1
    assert after["ece"] < before["ece"] / 3
    assert after["accuracy"] == before["accuracy"]  # a temperature never changes a prediction
    with pytest.raises(ValueError, match="logits"):
        calibration.fit_temperature(logits[:3], labels[:2])


def test_reliability_diagram_writes_a_png(toy, tmp_path):
    logits, labels = toy
    path = tmp_path / "reliability.png"
    calibration.reliability_diagram(scipy.special.softmax(logits, 1), labels, str(path),
                                    "toy", others={"T=4": (calibration.scaled_probs(logits, 4.0),
                                                           labels)})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bins = metrics.classification_report(scipy.special.softmax(logits, 1), labels)["reliability"]
    image = calibration.reliability_figure(bins, str(tmp_path / "r.png"), "val")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (tmp_path / "r.png").stat().st_size > 1000
