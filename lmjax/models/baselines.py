"""Classic baselines: a multilayer perceptron and a small convolutional network.

Both map a batch of inputs (images as uint8 NHWC, or float feature rows) to `num_outputs`
logits. Images are scaled to [0, 1] and standardised inside the model, so every data source
feeds raw pixels. Their weights are small and replicated: they train data-parallel only.
"""

from __future__ import annotations

from typing import Sequence

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models.layers import require


def as_float(x: jax.Array) -> jax.Array:
    """What the baselines compute on: raw uint8 pixels standardised, anything else as float32.
    Attacks and explanations use it to map [0, 1] images onto the model's own input scale."""
    if x.dtype == jnp.uint8:  # raw pixels: scale and centre (Fashion-MNIST: mean 0.29, std 0.35)
        return (x.astype(jnp.float32) / 255.0 - 0.29) / 0.35
    return x.astype(jnp.float32)


class MLP(nn.Module):
    num_outputs: int
    hidden: Sequence[int] = (512, 256)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        batch = x.shape[0]
        x = as_float(x).reshape(batch, -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        logits = nn.Dense(self.num_outputs)(x)
        chex.assert_shape(logits, (batch, self.num_outputs))
        return logits


class CNN(nn.Module):
    """Blocks of (3x3 convolution, batch norm, ReLU) x `convs_per_block`, then 2x2 max-pooling;
    then global average pooling, or with `head_hidden` the flattened feature map through dense
    ReLU layers of those widths; dropout and a linear classifier."""
    num_outputs: int
    channels: Sequence[int] = (32, 64, 128)
    convs_per_block: int = 2
    dropout: float = 0.0
    bn_momentum: float = 0.9
    head_hidden: Sequence[int] = ()
    norm: str = "batch"  # 'batch' | 'group' | 'none': DP-SGD needs per-example ('group'/'none')

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        chex.assert_rank(x, 4)  # (batch, height, width, channels)
        batch = x.shape[0]
        x = as_float(x)
        for i, width in enumerate(self.channels):
            for _ in range(self.convs_per_block):
                x = nn.Conv(width, (3, 3), use_bias=self.norm == "none")(x)
                # Under jit with the batch sharded over devices, the batch mean and variance
                # are reductions over the global batch: statistics are global, not per device.
                if self.norm == "batch":
                    x = nn.BatchNorm(use_running_average=deterministic,
                                     momentum=self.bn_momentum)(x)
                elif self.norm == "group":  # per example: no statistics shared across the batch
                    x = nn.GroupNorm(num_groups=min(8, width))(x)
                x = nn.relu(x)
            if not self.is_initializing():  # Grad-CAM's handles (lmjax/explain/gradients.py):
                self.sow("intermediates", f"block{i}", x)  # no-ops unless the collections
                x = self.perturb(f"block{i}", x)  # are asked for (mutable / passed in)
            if i < len(self.channels) - 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        if self.head_hidden:  # a dense head: cheap capacity where XLA's CPU convolutions are slow
            x = x.reshape(batch, -1)
            for width in self.head_hidden:
                x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
                x = nn.relu(nn.Dense(width)(x))
        else:
            x = x.mean(axis=(1, 2))
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        logits = nn.Dense(self.num_outputs)(x)
        chex.assert_shape(logits, (batch, self.num_outputs))
        return logits


MODELS = {"mlp": MLP, "cnn": CNN}


def from_section(section, num_outputs: int) -> nn.Module:
    """The baseline named by `model.name`, with the section's other fields as its settings
    (each module's dataclass fields are its typed config); errors name the field."""
    values = dict(section.to_dict() if hasattr(section, "to_dict") else section)
    name = values.pop("name", "")
    require(name in MODELS, f"model.name={name!r}: use one of {', '.join(MODELS)}.")
    cls = MODELS[name]
    known = {f.name for f in dataclasses.fields(cls)} - {"num_outputs", "parent", "name"}
    unknown = sorted(set(values) - known)
    require(not unknown, f"model.{unknown[0] if unknown else ''} is not a setting of the "
            f"{name}; it has {', '.join(sorted(known))}.")
    require(0.0 <= values.get("dropout", 0.0) < 1.0,
            f"model.dropout={values.get('dropout')}: must be in [0, 1).")
    for field in ("hidden", "channels", "head_hidden"):
        widths = values.get(field, ())
        require(all(isinstance(w, int) and w > 0 for w in widths),
                f"model.{field}={widths!r}: positive layer widths.")
    require(values.get("norm", "batch") in ("batch", "group", "none"),
            f"model.norm={values.get('norm')!r}: use 'batch', 'group' or 'none'.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(num_outputs=num_outputs, **values)
