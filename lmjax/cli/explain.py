"""Explain a trained run's predictions: attribution pictures and their values as JSON.

    python -m lmjax.explain --workdir=runs/fashion_mnist-cnn --method=ig --examples=0:16
    python -m lmjax.explain --workdir=runs/fashion_mnist-cnn --method=gradcam --layer=block1
    python -m lmjax.explain --workdir=runs/fashion_mnist-cnn --method=lime --segments=grid:4

Image runs (CNN, MLP): saliency, smoothgrad, ig (integrated gradients from a black image),
gradcam (CNN only, at --layer), occlusion, guided_backprop, lime. For each method it writes
<out>/<method>.png (each image, its heatmap overlay, the predicted and true class),
<out>/<method>.json (the attributions) and the picture to the run's TensorBoard. The methods
and their sanity checks: docs/explain.md.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import flags

from lmjax import rundir
from lmjax.cli.common import require
from lmjax.explain import images as imagelib
from lmjax.explain import render
from lmjax.explain.gradients import Classifier
from lmjax.train.restore import load_setup

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run to explain.")
_METHOD = flags.DEFINE_string("method", "ig", f"One of {', '.join(imagelib.METHODS)}.")
_EXAMPLES = flags.DEFINE_string("examples", "0:16", "Which examples of --split, start:stop.")
_SPLIT = flags.DEFINE_string("split", "test", "The split the examples come from (test, val).")
_OUT = flags.DEFINE_string("out", None, "Where to write the pictures and JSON "
                           "(default: <workdir>/explain).")
_LAYER = flags.DEFINE_string("layer", "", "Grad-CAM's conv block, block0..blockN-1 "
                             "(default: the last).")
_STEPS = flags.DEFINE_integer("steps", 64, "Integrated gradients: trapezoid intervals.")
_SAMPLES = flags.DEFINE_integer("samples", 0, "SmoothGrad's noisy copies (default 25) or "
                                "LIME's samples (default 1000).")
_SEGMENTS = flags.DEFINE_string("segments", "grid:4", "LIME's superpixels: grid:<pixels> or "
                                "quickshift.")
_TARGET = flags.DEFINE_string("target", "predicted", "Explain the 'predicted' or the 'true' "
                              "class.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of SmoothGrad's noise and LIME's samples.")
_LATEST = flags.DEFINE_bool("latest", False, "The latest checkpoint even if a best one exists.")


def parse_examples(spec: str, available: int) -> range:
    """'a:b' -> range(a, b), checked against the split's size."""
    start, sep, stop = spec.partition(":")
    if not sep or not start.strip().isdigit() or not stop.strip().isdigit():
        raise ValueError(f"--examples={spec!r}: give start:stop, e.g. --examples=0:16.")
    start, stop = int(start), int(stop)
    if not 0 <= start < stop <= available:
        raise ValueError(f"--examples={spec!r}: the split has {available} examples; give "
                         f"0 <= start < stop <= {available}.")
    return range(start, stop)


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained run to explain.")
    method = _METHOD.value
    require(method in imagelib.METHODS,
            f"--method={method!r}: use one of {', '.join(imagelib.METHODS)}.")
    require(_TARGET.value in ("predicted", "true"),
            f"--target={_TARGET.value!r}: use 'predicted' or 'true'.")
    s, state = load_setup(workdir, best=not _LATEST.value and rundir.has_best(workdir))
    task = s.task
    shape = (task.example or {}).get("shape", []) if hasattr(task, "example") else []
    require(len(shape) == 3, f"{workdir} is a {s.cfg.task!r} run without images; --method="
            f"{method} explains image classifiers (Fashion-MNIST CNN or MLP runs).")
    model = Classifier(variables={"params": state.params, **state.model_state},
                       module=task.model)
    require(_SPLIT.value in task.splits,
            f"--split={_SPLIT.value!r}: this run has {', '.join(task.splits)}.")
    data = task.data.test if _SPLIT.value == "test" else task.data.val
    ids = parse_examples(_EXAMPLES.value, len(data))
    images = np.asarray(data.inputs[ids.start:ids.stop])
    labels = np.asarray(data.labels[ids.start:ids.stop])
    predicted = imagelib.probabilities_fn(model)(images).argmax(-1)
    targets = predicted if _TARGET.value == "predicted" else labels

    start = time.time()
    maps = imagelib.attribute(model, images, targets, method, steps=_STEPS.value,
                              samples=_SAMPLES.value, layer=_LAYER.value, seed=_SEED.value,
                              segments=_SEGMENTS.value)
    seconds = time.time() - start
    names = task.class_names
    out = _OUT.value or os.path.join(workdir, "explain")
    os.makedirs(out, exist_ok=True)
    titles = [f"{i}: {names[p]}" + ("" if p == y else f"\n(true {names[y]})")
              for i, p, y in zip(ids, predicted, labels)]
    png = render.image_grid(images, maps, titles, f"{method} ({_SPLIT.value} {ids.start}:"
                            f"{ids.stop}, target: {_TARGET.value} class)")
    with open(os.path.join(out, f"{method}.png"), "wb") as f:
        f.write(png)
    record = {"method": method, "split": _SPLIT.value, "seconds": round(seconds, 3),
              "options": {"steps": _STEPS.value, "samples": _SAMPLES.value,
                          "layer": _LAYER.value, "segments": _SEGMENTS.value,
                          "seed": _SEED.value, "target": _TARGET.value},
              "examples": [{"index": i, "label": names[y], "predicted": names[p],
                            "target": int(t), "attribution": np.round(m, 6).tolist()}
                           for i, y, p, t, m in zip(ids, labels, predicted, targets, maps)]}
    with open(os.path.join(out, f"{method}.json"), "w") as f:
        json.dump(record, f)
    _to_tensorboard(workdir, method, png)
    print(f"{method}: {len(ids)} examples in {seconds:.2f}s -> {out}/{method}.png, "
          f"{out}/{method}.json")


def _to_tensorboard(workdir: str, method: str, png: bytes) -> None:
    try:
        from tensorboardX import SummaryWriter  # lazy: optional extra (tensorboard logging)
    except ImportError:
        return
    with SummaryWriter(os.path.join(workdir, "tensorboard")) as writer:
        writer.add_image(f"explain/{method}", render.png_array(png), dataformats="HWC")
