"""Image classification datasets as uint8 arrays in memory: Fashion-MNIST offline, TFDS online.

`data.name`:
- 'fashion_mnist': the four IDX files of Debian's `dataset-fashion-mnist` package (or of
  Zalando's release, in `data.dir`);
- 'tfds:<name>' (e.g. tfds:mnist, tfds:fashion_mnist, tfds:cifar10): read with
  `tfds.data_source`, which needs the dataset prepared or the internet, not TensorFlow.

The official test split is kept for the final evaluation only; the validation split is carved
from the training set (`data.val_size` examples, a fixed draw), or is one of `data.num_folds`
folds in cross-validation.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import ml_collections
import numpy as np

from lmjax.data.sources import DatasetError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclasses.dataclass
class Split:
    inputs: np.ndarray  # (N, H, W, C) uint8 for images; (N, F) float32 for tables
    labels: np.ndarray  # (N,) int32 class ids, or float32 regression targets

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "Split":
        return Split(self.inputs[idx], self.labels[idx])


@dataclasses.dataclass
class Examples:
    train: Split
    val: Split
    test: Split | None
    class_names: list[str]  # [] for regression
    description: str


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not): magic 0x00000803 images (N, rows, cols), 0x801 labels."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (0x801, 0x803):
        raise DatasetError(f"{path} is not an IDX image or label file (magic {magic:#x}).")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: {data.size} bytes for shape {dims}.")
    return data.reshape(dims)


def fashion_mnist(directory: str = "") -> dict[str, Split]:
    directory = directory or DEBIAN_DIR
    missing = [n for pair in FILES.values() for n in pair
               if not os.path.exists(os.path.join(directory, n))]
    if missing:
        raise DatasetError(
            f"Fashion-MNIST is not in {directory} (missing {', '.join(missing)}). Install it "
            "with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the "
            "four files from github.com/zalandoresearch/fashion-mnist and pass "
            "--config.data.dir=<folder>; with internet, --config.data.name=tfds:fashion_mnist "
            "also works.")
    out = {}
    for split, (images, labels) in FILES.items():
        x = read_idx(os.path.join(directory, images))[..., None]
        y = read_idx(os.path.join(directory, labels)).astype(np.int32)
        if len(x) != len(y):
            raise DatasetError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels.")
        out[split] = Split(x, y)
    return out


def tfds_images(name: str, image_key: str = "image", label_key: str = "label",
                max_examples: int = 0) -> tuple[dict[str, Split], list[str]]:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
        names = builder.info.features[label_key].names
    except Exception as e:
        raise DatasetError(f"TFDS dataset {name!r} has no image classification features "
                           f"'{image_key}'/'{label_key}': {str(e).splitlines()[0]}") from None
    out = {}
    for split in ("train", "test"):
        try:
            source = tfds.data_source(name, split=split)
            n = len(source) if max_examples <= 0 else min(len(source), max_examples)
            records = [source[i] for i in range(n)]  # one at a time: __getitems__ is unreliable
        except Exception as e:
            raise DatasetError(
                f"Could not read TFDS dataset {name!r} split {split!r} ({type(e).__name__}: "
                f"{str(e)[:200]}). Its first use downloads it, which needs internet; or build it "
                "elsewhere with `tfds build` and point TFDS_DATA_DIR at it.") from None
        x = np.stack([np.asarray(r[image_key], np.uint8) for r in records])
        y = np.asarray([r[label_key] for r in records], np.int32)
        out[split] = Split(x if x.ndim == 4 else x[..., None], y)
    return out, list(names)


def hold_out(train: Split, cfg: ml_collections.ConfigDict) -> tuple[Split, Split, str]:
    """(train, validation, description): a fixed random draw of data.val_size examples, or, in
    cross-validation, fold data.fold of data.num_folds."""
    order = np.random.default_rng(1234).permutation(len(train))  # fixed: not the run's seed
    folds = cfg.get("num_folds", 0)
    if folds > 1 and cfg.fold >= 0:
        parts = np.array_split(order, folds)
        val_idx = parts[cfg.fold]
        train_idx = np.concatenate([p for i, p in enumerate(parts) if i != cfg.fold])
        how = f"fold {cfg.fold + 1} of {folds}"
    else:
        if not 0 < cfg.val_size < len(train):
            raise DatasetError(f"data.val_size={cfg.val_size}: must be between 1 and "
                               f"{len(train) - 1}.")
        val_idx, train_idx = order[:cfg.val_size], order[cfg.val_size:]
        how = "a fixed random draw"
    return train.take(np.sort(train_idx)), train.take(np.sort(val_idx)), how


def load_fashion_mnist(cfg: ml_collections.ConfigDict) -> Examples:
    """data.name='fashion_mnist' (lmjax/data/sources.py)."""
    return _examples(cfg, fashion_mnist(cfg.dir), FASHION_CLASSES)


def load_tfds(cfg: ml_collections.ConfigDict) -> Examples:
    """data.name='tfds:<dataset>' (lmjax/data/sources.py)."""
    return _examples(cfg, *tfds_images(cfg.name[5:], max_examples=cfg.max_examples))


def _examples(cfg: ml_collections.ConfigDict, splits: dict, names: list[str]) -> Examples:
    train, val, how = hold_out(splits["train"], cfg)
    description = (f"{cfg.name}: {len(train):,} training, {len(val):,} validation ({how} from "
                   f"the training set), {len(splits['test']):,} test images of "
                   f"{'x'.join(map(str, train.inputs.shape[1:]))}, {len(names)} classes")
    return Examples(train, val, splits["test"], names, description)
