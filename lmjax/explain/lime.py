"""LIME (Ribeiro et al. 2016) with the `lime` package: a weighted linear surrogate of the
model's class probability, fitted on random on/off patterns of an image's superpixels (a grid
of square cells, or quickshift segments) or of a passage's tokens. The model is called on all
of an explanation's samples in one batch."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass
class LimeResult:
    weights: np.ndarray     # (features,) the surrogate's coefficient of each superpixel / token
    segments: np.ndarray | None  # (H, W) superpixel id of each pixel (images)
    score: float            # the surrogate's weighted R² on its own samples
    intercept: float

    def top(self, k: int = 5) -> set[int]:
        return set(np.argsort(-np.abs(self.weights))[:k].tolist())

    def pixel_map(self) -> np.ndarray:
        """(H, W, 1): each pixel carries its superpixel's weight."""
        return self.weights[self.segments][..., None]


def grid_segments(height: int, width: int, cell: int) -> np.ndarray:
    rows = np.arange(height) // cell
    cols = np.arange(width) // cell
    return rows[:, None] * (-(-width // cell)) + cols[None, :]


def segmenter(kind: str) -> Callable:
    """'grid:<cell>' (square cells of cell x cell pixels) or 'quickshift'."""
    if kind.startswith("grid:") and kind[5:].isdigit() and int(kind[5:]) > 0:
        cell = int(kind[5:])
        return lambda image: grid_segments(image.shape[0], image.shape[1], cell)
    if kind == "quickshift":
        from lime.wrappers.scikit_image import SegmentationAlgorithm  # lazy: optional extra

        return SegmentationAlgorithm("quickshift", kernel_size=2, max_dist=20, ratio=0.5,
                                     random_seed=0)
    raise ValueError(f"--segments={kind!r}: use 'grid:<pixels>' (e.g. grid:4) or 'quickshift'.")


def explain_image(image: np.ndarray, target: int, probabilities: Callable, samples: int = 1000,
                  segments: str = "grid:4", seed: int = 0, hide: float = 0.0,
                  kernel_width: float = 0.25) -> LimeResult:
    """LIME for one uint8 (H, W, C) image. `probabilities(batch_uint8) -> (n, classes)`.

    The same samples, distances, kernel and surrogate as lime's LimeImageExplainer (its
    LimeBase fits the surrogate; tests/explain/test_lime.py checks the weights are identical),
    but the perturbed images are built in one vectorised step instead of lime's per-sample
    Python loop, and the model sees all of them in one batch."""
    from lime import lime_base  # lazy: optional extra (lmjax[explain])
    from sklearn.metrics import pairwise_distances  # lazy: as above (lime needs scikit-learn)

    rng = np.random.RandomState(seed)
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    segs = np.asarray(segmenter(segments)(rgb.astype(np.float64)))
    n = int(segs.max()) + 1
    data = rng.randint(0, 2, samples * n).reshape(samples, n)  # lime's draw, in lime's order
    data[0, :] = 1
    keep = data[:, segs][..., None].astype(bool)                    # (samples, H, W, 1)
    batch = np.where(keep, image[None], np.asarray(hide, image.dtype))
    labels = np.asarray(probabilities(batch))
    distances = pairwise_distances(data, data[:1], metric="cosine").ravel()
    kernel = lambda d: np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))  # noqa: E731 (lime's)
    base = lime_base.LimeBase(kernel, random_state=rng)
    intercept, local_exp, score, _ = base.explain_instance_with_data(
        data, labels, distances, target, num_features=10_000, feature_selection="auto")
    weights = np.zeros(n, np.float32)
    for feature, w in local_exp:
        weights[feature] = w
    return LimeResult(weights=weights, segments=segs, score=float(score),
                      intercept=float(intercept))


def explain_image_with_lime(image: np.ndarray, target: int, probabilities: Callable,
                            samples: int = 1000, segments: str = "grid:4", seed: int = 0,
                            hide: float = 0.0, kernel_width: float = 0.25) -> LimeResult:
    """The same through lime's own LimeImageExplainer (slow: a Python loop per sample), the
    reference that explain_image is tested against."""
    from lime import lime_image  # lazy: optional extra (lmjax[explain])

    channels = image.shape[-1]

    def classifier(batch):  # lime works on RGB floats; give the model its own pixels back
        pixels = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        return np.asarray(probabilities(pixels[..., :channels]))

    rgb = np.repeat(image, 3, axis=-1) if channels == 1 else image
    lime_image.tqdm = lambda rows: rows  # lime 0.2.0.1 always draws a progress bar per image
    explainer = lime_image.LimeImageExplainer(kernel_width=kernel_width, random_state=seed)
    e = explainer.explain_instance(rgb.astype(np.float64), classifier, labels=(target,),
                                   top_labels=None, hide_color=hide, num_features=10_000,
                                   num_samples=samples, batch_size=samples,
                                   segmentation_fn=segmenter(segments), random_seed=seed)
    return _result(e, target, e.segments)


def explain_text(text: str, target: int, probabilities: Callable, samples: int = 1000,
                 seed: int = 0, mask_string: str | None = None) -> tuple[list[str], LimeResult]:
    """LIME over the whitespace tokens of a passage: (tokens, result with one weight per token
    position). `probabilities(list_of_texts) -> (n, classes)`. A removed token becomes
    `mask_string` (lime's default 'UNKWORDZ' when None)."""
    from lime import lime_text  # lazy: optional extra (lmjax[explain])

    explainer = lime_text.LimeTextExplainer(bow=False, split_expression=r"\s+",
                                            random_state=seed, mask_string=mask_string)
    e = explainer.explain_instance(text, lambda texts: np.asarray(probabilities(list(texts))),
                                   labels=(target,), num_features=10_000, num_samples=samples)
    words = list(e.domain_mapper.indexed_string.inverse_vocab)  # bow=False: one per position
    return words, _result(e, target, None, size=len(words))


def _result(e, target: int, segments, size: int | None = None) -> LimeResult:
    pairs = e.local_exp[target]
    n = size or int(np.max(segments)) + 1
    weights = np.zeros(n, np.float32)
    for feature, w in pairs:
        weights[feature] = w
    return LimeResult(weights=weights, segments=segments, score=float(e.score),
                      intercept=float(e.intercept[target]))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)
