"""Rotary position embeddings: the frequencies of each scaling kind released models use, and
their application to queries and keys.

The frequencies follow Hugging Face's `modeling_rope_utils` formulas (computed in float32, as
there), so converted checkpoints see the same angles:

- 'default': theta ** (-2i / dim);
- 'linear': divided by `factor` (positions interpolated);
- 'llama3': Llama 3.1's smooth interpolation of the low frequencies only;
- 'yarn': YaRN's blend of interpolated and original frequencies, with cos and sin scaled by
  the attention factor (0.1 ln(factor) + 1 unless given).

A partial rotary dimension rotates the first `rotary_dim` features of each head (in two
halves, the GPT-NeoX layout Hugging Face uses) and passes the rest through.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("default", "linear", "llama3", "yarn")


@dataclasses.dataclass(frozen=True)
class Rope:
    """One set of rotary frequencies: what a layer kind (local or global) rotates with."""
    dim: int                     # features rotated per head (even)
    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0   # llama3
    high_freq_factor: float = 4.0  # llama3
    original_context: int = 0      # llama3, yarn: the context the model was pretrained at
    beta_fast: float = 32.0        # yarn
    beta_slow: float = 1.0         # yarn
    attention_factor: float = 0.0  # yarn: 0 is 0.1 ln(factor) + 1
    truncate: bool = True          # yarn: the correction range rounded to whole dimensions

    def inv_frequencies(self) -> np.ndarray:
        """(dim / 2,) float32 angular frequencies per position."""
        exponents = np.arange(0, self.dim, 2, dtype=np.int64).astype(np.float32) / self.dim
        base = np.float32(self.theta) ** exponents
        inv = (np.float32(1.0) / base).astype(np.float32)
        if self.kind == "linear":
            return (inv / np.float32(self.factor)).astype(np.float32)
        if self.kind == "llama3":
            return self._llama3(inv)
        if self.kind == "yarn":
            return self._yarn(base)
        return inv

    def _llama3(self, inv: np.ndarray) -> np.ndarray:
        old = self.original_context
        low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / self.factor, inv)
        smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor -
                                                           self.low_freq_factor)
        smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)

    def _yarn(self, base: np.ndarray) -> np.ndarray:
        dim, theta, context = self.dim, self.theta, self.original_context

        def correction(rotations):
            return dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = correction(self.beta_fast), correction(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # no zero-width ramp
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        interpolated = 1.0 / (self.factor * base)
        original = 1.0 / base
        return (interpolated * (1 - extrapolation) + original * extrapolation).astype(np.float32)

    @property
    def scaling(self) -> float:
        """What cos and sin are multiplied by (YaRN's attention factor; 1 otherwise)."""
        if self.kind != "yarn":
            return 1.0
        if self.attention_factor:
            return self.attention_factor
        return 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0

    def tables(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(cos, sin), each (batch, length, dim / 2) float32, for integer `positions`."""
        angles = positions[..., None].astype(jnp.float32) * jnp.asarray(self.inv_frequencies())
        return jnp.cos(angles) * self.scaling, jnp.sin(angles) * self.scaling


def apply(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x (batch, length, heads, head_dim) rotated by the tables (batch, length, rot / 2): the
    first `rot` features in two halves, the rest unchanged. Computed in float32."""
    rot = 2 * cos.shape[-1]
    x32 = x.astype(jnp.float32)
    x1, x2, rest = x32[..., :rot // 2], x32[..., rot // 2:rot], x32[..., rot:]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s, rest], axis=-1)
    return out.astype(x.dtype)
