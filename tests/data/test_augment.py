"""Augmentation: a pure function of (key, example id) that keeps the picture's content."""

import jax
import numpy as np

from lmjax.data.augment import augment


def _images(n=16):
    return np.random.default_rng(0).integers(1, 255, (n, 28, 28, 1)).astype(np.uint8)


def test_same_key_and_ids_give_the_same_images_and_order_does_not_matter():
    x, ids, key = _images(), np.arange(16, dtype=np.int32), jax.random.PRNGKey(3)
    a = np.asarray(augment(x, ids, key, crop_padding=2, flip=True))
    b = np.asarray(augment(x, ids, key, crop_padding=2, flip=True))
    np.testing.assert_array_equal(a, b)
    # An example's augmentation depends on its id, not its position in the batch.
    perm = np.random.default_rng(1).permutation(16)
    c = np.asarray(augment(x[perm], ids[perm], key, crop_padding=2, flip=True))
    np.testing.assert_array_equal(c, a[perm])
    d = np.asarray(augment(x, ids, jax.random.PRNGKey(4), crop_padding=2, flip=True))
    assert (d != a).any()


def test_flip_mirrors_and_crop_shifts_without_changing_content():
    x, ids = _images(64), np.arange(64, dtype=np.int32)
    flipped = np.asarray(augment(x, ids, jax.random.PRNGKey(0), flip=True))
    mirrored = [(f == i[:, ::-1]).all() and not (f == i).all() for f, i in zip(flipped, x)]
    same = [(f == i).all() for f, i in zip(flipped, x)]
    assert all(m or s for m, s in zip(mirrored, same)) and 10 < sum(mirrored) < 54
    cropped = np.asarray(augment(x, ids, jax.random.PRNGKey(0), crop_padding=2))
    for c, i in zip(cropped, x):  # a window of the zero-padded image: the centre survives
        padded = np.pad(i, ((2, 2), (2, 2), (0, 0)))
        assert any((padded[dy:dy + 28, dx:dx + 28] == c).all()
                   for dy in range(5) for dx in range(5))
