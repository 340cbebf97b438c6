"""Does the model know when it does not know? Calibration over a whole evaluation set.

ECE (15 equal-width confidence bins), the multi-class Brier score and the NLL (the metrics live
in `metrics.py`, so every classifier run logs them), temperature scaling fitted on validation
(Guo et al. 2017: one scalar T dividing the logits, chosen to minimise validation NLL; it never
changes a prediction), and the reliability diagram as a PNG.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special

from lmjax.eval import metrics

BINS = 15


def calibration_report(probs: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict:
    """{ece, brier, nll, accuracy} of predicted probabilities [N, C] against labels [N]."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    return {f"{prefix}accuracy": float((probs.argmax(1) == labels).mean()),
            f"{prefix}nll": metrics.log_loss(probs, labels),
            f"{prefix}ece": metrics.expected_calibration_error(probs, labels, BINS),
            f"{prefix}brier": metrics.brier_score(probs, labels)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the NLL of softmax(logits / T) (fit on validation)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ValueError(f"fit_temperature needs logits [N, C] and N labels; got "
                         f"{logits.shape} and {labels.shape}.")

    def nll(log_t):
        logp = scipy.special.log_softmax(logits / np.exp(log_t), axis=1)
        return -logp[np.arange(len(labels)), labels].mean()

    result = scipy.optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)),
                                            method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def scaled_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return scipy.special.softmax(np.asarray(logits, np.float64) / temperature, axis=1)


def reliability_figure(bins: dict, path: str, title: str = "") -> np.ndarray:
    """The reliability diagram of `classification_report`'s 'reliability' bins: written as a
    PNG to `path` and returned as an (H, W, 3) uint8 image (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only for pictures
    from matplotlib.figure import Figure  # lazy: as above

    count, acc, conf = (np.asarray(bins[k], np.float64) for k in ("count", "accuracy",
                                                                   "confidence"))
    ece = float((count * np.abs(acc - conf)).sum() / max(count.sum(), 1e-12))
    # A Figure of its own, not pyplot's: a run inside a notebook keeps its inline plots.
    fig = Figure(figsize=(3.2, 3.2), dpi=80)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    filled = count > 0
    centres = (np.arange(len(count)) + 0.5) / len(count)
    ax.bar(centres[filled], acc[filled], width=1 / len(count), edgecolor="black", alpha=0.6)
    ax.set_title(f"{title} ECE {ece:.3f}", fontsize=9)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: str, title: str = "",
                        others: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Accuracy against confidence in 15 bins (the diagonal is perfect calibration), with the
    ECE in the legend; `others` adds more (name -> (probs, labels)) as lines. A small PNG."""
    from matplotlib.figure import Figure  # lazy: matplotlib is needed only for pictures

    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    centres = (np.arange(BINS) + 0.5) / BINS
    b = metrics.calibration_bins(probs, labels, BINS)
    filled = b["count"] > 0
    ece = metrics.expected_calibration_error(probs, labels, BINS)
    ax.bar(centres[filled], b["accuracy"][filled], width=1 / BINS, edgecolor="black",
           alpha=0.6, label=f"{title or 'model'} (ECE {ece:.3f})")
    for name, (p, y) in (others or {}).items():
        o = metrics.calibration_bins(p, y, BINS)
        keep = o["count"] > 0
        ax.plot(o["confidence"][keep], o["accuracy"][keep], marker="o", ms=3,
                label=f"{name} (ECE {metrics.expected_calibration_error(p, y, BINS):.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
