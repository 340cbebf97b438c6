"""Image loaders: IDX parsing, the held-out splits, the clear error, and the TFDS path."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmjax.data import images, sources
from lmjax.data.corpora import DatasetError


def _cfg(load_config, **data):
    c = load_config("tiny", "fashion_mnist.py")
    c.data.update(**data)
    return c.data


def test_fashion_mnist_files_load_with_the_right_shapes_and_splits(load_config, fashion_dir):
    ex = sources.load(_cfg(load_config, dir=fashion_dir, val_size=100), "images")
    assert ex.train.inputs.shape == (500, 28, 28, 1) and ex.train.inputs.dtype == np.uint8
    assert ex.val.inputs.shape == (100, 28, 28, 1) and ex.test.inputs.shape == (200, 28, 28, 1)
    for split in (ex.train, ex.val, ex.test):
        assert split.labels.dtype == np.int32 and 0 <= split.labels.min() <= split.labels.max() < 10
    assert ex.class_names[9] == "Ankle boot"
    # Validation is carved from the training images, never from the test split: each validation
    # image is one of the 600 training images and none of them is also in the training set.
    all_train = images.fashion_mnist(fashion_dir)["train"].inputs.reshape(600, -1)
    seen = {row.tobytes() for row in all_train}
    assert all(row.tobytes() in seen for row in ex.val.inputs.reshape(100, -1))
    assert not {r.tobytes() for r in ex.val.inputs.reshape(100, -1)} & {
        r.tobytes() for r in ex.train.inputs.reshape(500, -1)}


def test_folds_partition_the_training_images(load_config, fashion_dir):
    cfg = _cfg(load_config, dir=fashion_dir)
    cfg.num_folds = 3
    seen = []
    for fold in range(3):
        cfg.fold = fold
        ex = sources.load(cfg, "images")
        assert len(ex.train) + len(ex.val) == 600
        seen.append({r.tobytes() for r in ex.val.inputs.reshape(len(ex.val), -1)})
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


def test_missing_files_name_the_install_command(load_config, tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        sources.load(_cfg(load_config, dir=str(tmp_path)), "images")


def test_a_truncated_file_is_reported(tmp_path):
    from gzip import open as gz
    with gz(tmp_path / "bad.gz", "wb") as f:
        f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 3, 3))
                + b"\0" * 5)
    with pytest.raises(DatasetError, match="truncated"):
        images.read_idx(str(tmp_path / "bad.gz"))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tfds_catalog_images_through_mock_data(load_config, name):
    with tfds.testing.mock_data(num_examples=40):
        ex = sources.load(_cfg(load_config, name=f"tfds:{name}", val_size=10), "images")
    assert ex.train.inputs.shape == (30, 28, 28, 1) and ex.test.inputs.shape[1:] == (28, 28, 1)
    assert len(ex.class_names) == 10 and ex.train.labels.max() < 10
