"""Classification (and regression) of fixed examples: images, table rows, any arrays.

The data source gives train / validation / test arrays (lmjax/data/images.py, tabular.py);
`model.name` picks a baseline from lmjax/models/baselines.py. Training batches are epochs of
fresh permutations drawn from (seed, epoch); images are augmented on the device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax import rundir
from lmjax.data import sources
from lmjax.data.augment import augment
from lmjax.data.batches import spread
from lmjax.eval import metrics
from lmjax.models import baselines
from lmjax.parallel.mesh import local_rows
from lmjax.tasks.base import CLASSES, IMAGES, Task, epoch_indices, padded_batches


def class_weights(spec: str, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """None (''), 'balanced' (n / (classes * count), scikit-learn's) or explicit 'w0,w1,...'."""
    if not spec:
        return None
    if spec == "balanced":
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        if (counts == 0).any():
            raise ValueError("train.class_weights='balanced': some class has no training example.")
        return (len(labels) / (num_classes * counts)).astype(np.float32)
    try:
        w = np.asarray([float(x) for x in spec.split(",")], np.float32)
    except ValueError:
        w = np.zeros(0)
    if len(w) != num_classes or (w <= 0).any():
        raise ValueError(f"train.class_weights={spec!r}: use '', 'balanced' or {num_classes} "
                         "positive comma-separated numbers, one per class.")
    return w


def classification_loss(logits, labels, weights=None, smoothing: float = 0.0):
    """(mean cross-entropy, accuracy). With class weights, a weighted mean: each example counts
    its class's weight, as scikit-learn and PyTorch define it."""
    logits = logits.astype(jnp.float32)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    w = jnp.ones_like(losses) if weights is None else jnp.asarray(weights)[labels]
    accuracy = (logits.argmax(-1) == labels).mean()
    return (losses * w).sum() / w.sum(), accuracy


def classification_outputs(logits, labels, weights) -> dict:
    """Evaluation outputs: the summed log loss, and every example's probabilities and label."""
    logits = logits.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {"sums": {"loss": (losses * weights).sum(), "count": weights.sum()},
            "examples": {"probs": jax.nn.softmax(logits), "labels": labels}}


def classification_metrics(sums: dict, examples: dict, class_names: list[str]) -> dict:
    out = {"loss": sums["loss"] / sums["count"]}  # unweighted: the log loss
    out.update(metrics.classification_report(examples["probs"], examples["labels"], class_names))
    return out


def load_examples(cfg: ml_collections.ConfigDict):
    """The images or the table `data.name` names (lmjax/data/sources.py)."""
    return sources.load(cfg, "images", "table")


class ClassificationTask(Task):
    @classmethod
    def check(cls, cfg: ml_collections.ConfigDict) -> None:
        sources.check(cfg.data, "images", "table")

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        if assets is None:
            x = self.data.train.inputs
            self.class_names = list(self.data.class_names)
            self.example = {"shape": list(x.shape[1:]), "dtype": str(x.dtype)}
        else:
            self.class_names, self.example = list(assets.class_names), assets.example
        self.num_classes = len(self.class_names)
        self.model = baselines.from_section(cfg.model, self.num_outputs)
        self.weights = None
        if assets is None and self.num_classes:
            self.weights = class_weights(cfg.train.get("class_weights", ""),
                                         self.data.train.labels, self.num_classes)

    @functools.cached_property
    def data(self):
        return load_examples(self.cfg.data)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("val",) if self.data.test is None else ("val", "test")

    @property
    def capabilities(self) -> frozenset:
        images = {IMAGES} if len(self.example["shape"]) == 3 else set()
        return frozenset(images | ({CLASSES} if self.num_classes else set()))

    def example_arrays(self, split: str = "train") -> dict:
        data = {"train": self.data.train, "val": self.data.val, "test": self.data.test}[split]
        if data is None:
            raise ValueError(f"this run's data has no {split} split (it has "
                             f"{', '.join(('train',) + self.splits)}).")
        return {"inputs": data.inputs, "labels": data.labels}

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["labels"])

    def gather(self, arrays: dict, ids) -> dict:
        return {"inputs": arrays["inputs"][ids], "labels": arrays["labels"][ids],
                "ids": ids.astype(np.int32)}

    def labels(self, split: str = "train") -> np.ndarray:
        return np.asarray(self.example_arrays(split)["labels"])

    def run_assets(self) -> rundir.Assets:
        return rundir.Assets(task=self.cfg.task, model=self.cfg.model.to_dict(),
                             config=self.cfg.to_dict(), class_names=self.class_names,
                             example=self.example)

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def describe(self) -> str:
        return self.data.description

    def init_variables(self, rng: jax.Array):
        example = np.zeros((1, *self.example["shape"]), self.example["dtype"])
        return self.model.init(rng, example)

    def _apply(self, params, model_state, inputs, rng=None):
        """(outputs, new model_state); training mode when rng is given."""
        variables = {"params": params, **model_state}
        if rng is None:
            return self.model.apply(variables, inputs, deterministic=True), model_state
        return self.model.apply(variables, inputs, deterministic=False, rngs={"dropout": rng},
                                mutable=list(model_state))

    def _augment(self, batch, rng):
        d = self.cfg.data
        if batch["inputs"].ndim != 4:
            return batch["inputs"]
        return augment(batch["inputs"], batch["ids"], jax.random.fold_in(rng, 1),
                       crop_padding=d.get("crop_padding", 0), flip=d.get("flip", False))

    def loss(self, params, model_state, batch, rng):
        inputs = self._augment(batch, rng)
        logits, model_state = self._apply(params, model_state, inputs, rng)
        loss, accuracy = classification_loss(logits, batch["labels"], self.weights,
                                             self.cfg.train.get("label_smoothing", 0.0))
        return loss, ({"accuracy": accuracy}, model_state)

    def eval_outputs(self, params, model_state, batch):
        logits, _ = self._apply(params, model_state, batch["inputs"])
        if batch["inputs"].ndim == 4 and self.cfg.data.get("eval_flip", False):
            # Test-time augmentation: the mean of the image's and its mirror's probabilities.
            mirrored, _ = self._apply(params, model_state, batch["inputs"][:, :, ::-1])
            logits = jnp.log((jax.nn.softmax(logits.astype(jnp.float32)) +
                              jax.nn.softmax(mirrored.astype(jnp.float32))) / 2)
        return classification_outputs(logits, batch["labels"], batch["weights"])

    def summarize(self, sums: dict, examples: dict) -> dict:
        return classification_metrics(sums, examples, self.data.class_names)

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        ids = epoch_indices(self.cfg.seed, step, self.cfg.train.batch_size, self.num_examples())
        return self.examples("train", local_rows(ids, process_index, process_count))

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        arrays = self.example_arrays(split)
        ids = spread(self.num_examples(split), max_examples)
        return padded_batches(len(ids), batch_size, lambda i: self.gather(arrays, ids[i]))


class RegressionTask(ClassificationTask):
    """Mean squared error on standardised targets; metrics in the targets' own units."""

    @property
    def num_outputs(self) -> int:
        return 1

    def loss(self, params, model_state, batch, rng):
        preds, model_state = self._apply(params, model_state, batch["inputs"], rng)
        return jnp.mean((preds[:, 0] - batch["labels"]) ** 2), ({}, model_state)

    def eval_outputs(self, params, model_state, batch):
        preds, _ = self._apply(params, model_state, batch["inputs"])
        err = (preds[:, 0] - batch["labels"]) ** 2
        return {"sums": {"loss": (err * batch["weights"]).sum(), "count": batch["weights"].sum()},
                "examples": {"preds": preds[:, 0], "targets": batch["labels"]}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        scale, shift = self.data.target_scale, self.data.target_shift
        preds = examples["preds"] * scale + shift
        targets = examples["targets"] * scale + shift
        return {"loss": sums["loss"] / sums["count"], **metrics.regression_report(preds, targets)}
