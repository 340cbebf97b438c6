"""Packed rows (segment ids) in the GPT's training path: each example sees only itself."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.data import sft
from lmjax.models.gpt import GPT, segment_positions


def _examples(lengths, vocab, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        loss = np.zeros(n, bool)
        loss[n // 2:] = True  # second half is the "response"
        out.append(sft.Example(rng.integers(1, vocab, n).astype(np.int32), loss))
    return out


def _per_example_losses(model, params, batch, owners):
    apply = jax.jit(lambda p, x, s: model.apply({"params": p}, x, segment_ids=s))
    logits = apply(params, batch["inputs"], batch.get("segment_ids"))
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["targets"]))
    w = batch["loss_weights"]
    return {k: (losses[idx] * w[idx]).sum() / w[idx].sum() for k, idx in owners.items()}


def _owners(batch, groups):
    """example index -> boolean mask of its positions in the batch."""
    out = {}
    for r, group in enumerate(groups):
        for s, ex in enumerate(group, 1):
            m = np.zeros(batch["inputs"].shape, bool)
            m[r] = batch["segment_ids"][r] == s
            out[ex] = m
    return out


def test_segment_positions_restart_in_each_segment():
    ids = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(segment_positions(ids), [[0, 1, 2, 0, 1, 0, 0, 1]])


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True, "remat": "full"}])
def test_packing_gives_the_same_per_example_loss_as_padding(gpt_config, overrides):
    cfg = gpt_config(block_size=32, vocab_size=50, **overrides)
    model = GPT(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32), jnp.int32))["params"]
    exs = _examples([9, 14, 6, 21, 11, 5, 17], cfg.vocab_size)
    groups = sft.pack_groups([len(e.tokens) for e in exs], 32, np.arange(len(exs)))
    assert len(groups) < len(exs)  # some rows really hold several examples
    packed = sft.pack([[exs[i] for i in g] for g in groups], 32)
    padded = sft.rows(exs, 32)
    got = _per_example_losses(model, params, packed, _owners(packed, groups))
    want = _per_example_losses(model, params, padded,
                               _owners(padded, [[i] for i in range(len(exs))]))
    for i in range(len(exs)):
        assert abs(got[i] - want[i]) <= 1e-5, (i, got[i], want[i])
    # Without segment ids the packed examples would see each other: the test can fail.
    leaky = _per_example_losses(model, params, {**packed, "segment_ids": None},
                                _owners(packed, groups))
    assert max(abs(leaky[i] - want[i]) for i in range(len(exs))) > 1e-3


def test_a_packed_example_does_not_see_its_neighbours(gpt_config):
    cfg = gpt_config(block_size=16)
    model = GPT(cfg)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16), jnp.int32))["params"]
    tokens = np.arange(1, 17, dtype=np.int32)[None] % cfg.vocab_size
    seg = np.array([[1] * 6 + [2] * 10], np.int32)
    apply = jax.jit(lambda x: model.apply({"params": params}, x, segment_ids=seg))
    base = apply(tokens)
    changed = tokens.copy()
    changed[0, :6] = 7  # a different first example
    after = apply(changed)
    np.testing.assert_array_equal(np.asarray(base[0, 6:]), np.asarray(after[0, 6:]))
    assert not np.allclose(base[0, :6], after[0, :6])
