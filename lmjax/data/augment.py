"""Image augmentation on the device, as a pure function of (key, example id).

The training step passes the key of its step, so a resumed run augments every image exactly as
the uninterrupted run did; labels are never touched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def augment(images: jax.Array, ids: jax.Array, key: jax.Array, *, crop_padding: int = 0,
            flip: bool = False) -> jax.Array:
    """Random crop after zero padding by `crop_padding` pixels, and random horizontal flip."""
    if not crop_padding and not flip:
        return images

    def one(image, example_id):
        crop_key, flip_key = jax.random.split(jax.random.fold_in(key, example_id))
        if crop_padding:
            p = crop_padding
            padded = jnp.pad(image, ((p, p), (p, p), (0, 0)))
            dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * p + 1)
            image = jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)
        if flip:
            image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
        return image

    return jax.vmap(one)(images, ids)
