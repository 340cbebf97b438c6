"""Muon on a real GPT parameter tree: orthogonalised matrix updates, AdamW for everything else."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lmjax.models.gpt import GPT, matrix_dims
from lmjax.optim import build_optimizer


@pytest.fixture(scope="module")
def gpt_params(gpt_config):
    """A small GPT's parameters, per-layer (scan=False) or stacked for nn.scan (scan=True)."""
    def build(scan: bool):
        cfg = gpt_config(vocab_size=40, block_size=8, d_model=16, scan_layers=scan)
        return nn.meta.unbox(GPT(cfg).init(jax.random.PRNGKey(0),
                                           jnp.zeros((1, 8), jnp.int32))["params"])

    return build


def _cfg(**kw):
    c = dict(name="muon", learning_rate=1e-3, muon_learning_rate=0.02, schedule="constant",
             warmup_steps=0, end_lr_ratio=1.0, b1=0.9, b2=0.99, eps=1e-8, momentum=0.95,
             rms_decay=0.9, weight_decay=0.0, clip_norm=0.0, l1=0.0, l2=0.0)
    c.update(kw)
    return ml_collections.ConfigDict(c)


@pytest.mark.parametrize("scan", [False, True])
def test_matrix_layout_of_gpt_kernels(gpt_params, scan):
    dims = matrix_dims(gpt_params(scan))
    lead = 1 if scan else 0
    attn = dims["blocks"]["block"]["attn"] if scan else dims["block_0"]["attn"]
    mlp = dims["blocks"]["block"]["mlp"] if scan else dims["block_0"]["mlp"]
    assert attn["qkv"]["kernel"].reduction_axis == (lead,)  # (embed) -> (3, heads, head_dim)
    assert attn["out"]["kernel"].reduction_axis == (lead, lead + 1)  # (heads, head_dim) -> embed
    assert mlp["proj"]["kernel"].output_axis == (lead + 1,)
    assert dims["wte"]["embedding"] is None and dims["wpe"] is None  # embeddings: AdamW
    assert attn["qkv"]["bias"] is None and dims["ln_f"]["scale"] is None


@pytest.mark.slow
def test_matrix_updates_are_orthogonalised_and_the_rest_is_adamw(gpt_params):
    params = gpt_params(scan=False)
    rng = np.random.default_rng(0)
    # Gradients with an uneven spectrum: singular values from 1 to 1e-2.
    def skewed(x):
        if x.ndim != 2:
            return jnp.asarray(rng.normal(size=x.shape), jnp.float32)
        u, _, vt = np.linalg.svd(rng.normal(size=x.shape), full_matrices=False)
        return jnp.asarray((u * np.logspace(0, -2, len(vt))) @ vt, jnp.float32)
    grads = jax.tree.map(skewed, params)
    tx = build_optimizer(_cfg(), 10, matrix_dims=matrix_dims)
    updates, _ = tx.update(grads, tx.init(params), params)
    fc = np.asarray(updates["block_0"]["mlp"]["fc"]["kernel"])  # (16, 64)
    s = np.linalg.svd(fc, compute_uv=False)
    assert s.max() / s.min() < 2  # Newton-Schulz flattened a 100:1 spectrum
    # Non-matrix leaves follow AdamW at the base rate exactly (Nesterov-style, as Muon's is).
    adam = optax.adamw(1e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, nesterov=True)
    ref, _ = adam.update(grads, adam.init(params), params)
    for path in (("wte", "embedding"), ("ln_f", "scale"), ("block_0", "attn", "qkv", "bias")):
        got, want = updates, ref
        for k in path:
            got, want = got[k], want[k]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


def test_muon_needs_the_matrix_layout():
    with pytest.raises(ValueError, match="matrix_dims"):
        build_optimizer(_cfg(), 10)
