"""LoRA through qwix: adapters where asked, frozen base, merged == unmerged."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.models import bert, lora

TOKENS = jnp.array([[2, 11, 12, 13, 14, 3, 0, 0], [2, 21, 22, 3, 0, 0, 0, 0]], jnp.int32)
RANK, ALPHA = 4, 8.0
pytestmark = pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")


@pytest.fixture(scope="module")
def cfg(bert_config):
    """A 2-layer, d_model 16 encoder with a 3-class head (`bert_config`, tests/conftest.py)."""
    return bert_config()


@pytest.fixture(scope="module")
def adapted(cfg):
    base = bert.Classifier(cfg)
    model = lora.apply_lora(base, RANK, ALPHA, "query,value,out,fc")
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), TOKENS))["params"]
    return base, model, params


def test_adapters_sit_beside_the_chosen_projections_only(adapted):
    _, _, params = adapted
    layer = params["bert"]["layer_1"]
    for name in ("query", "value", "out"):
        assert {"kernel_lora_a", "kernel_lora_b"} <= set(layer["attention"][name])
    assert set(layer["attention"]["key"]) == {"kernel", "bias"}
    assert layer["fc"]["kernel_lora_a"].shape == (16, RANK)
    assert layer["fc"]["kernel_lora_b"].shape == (RANK, 32)
    assert layer["attention"]["out"]["kernel_lora_a"].shape == (16, RANK)  # (heads*kv, rank)
    assert "kernel_lora_a" not in params["classifier"]


def test_fresh_adapters_leave_the_model_unchanged(adapted):
    base, model, params = adapted
    plain = lora.merge(params, RANK, ALPHA)  # B is zero: merging is the identity
    np.testing.assert_allclose(model.apply({"params": params}, TOKENS),
                               base.apply({"params": plain}, TOKENS), atol=1e-6)


@pytest.mark.slow
def test_merged_logits_equal_unmerged(adapted):
    base, model, params = adapted
    # Trained-looking adapters (every factor non-zero) and a head with logits of order one.
    keys = iter(jax.random.split(jax.random.PRNGKey(5), 1000))
    trained = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.3 * jax.random.normal(next(keys), x.shape) if lora.is_adapter(p)
        else x, params)
    trained["classifier"]["kernel"] = trained["classifier"]["kernel"] * 50
    merged = lora.merge(trained, RANK, ALPHA)
    assert jax.tree.structure(merged) == jax.tree.structure(
        nn.meta.unbox(base.init(jax.random.PRNGKey(0), TOKENS))["params"])
    unmerged_logits = model.apply({"params": trained}, TOKENS)
    without = dict(params, classifier=trained["classifier"])  # the adapters matter:
    plain = model.apply({"params": without}, TOKENS)
    assert np.abs(np.asarray(unmerged_logits - plain)).max() > 0.1
    np.testing.assert_allclose(base.apply({"params": merged}, TOKENS), unmerged_logits,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_only_adapters_and_head_train(adapted):
    """optax.multi_transform with set_to_zero on the frozen labels: one step moves only them."""
    _, model, params = adapted
    mask = lora.trainable_mask(params)
    labels = jax.tree.map(lambda t: "train" if t else "freeze", mask)
    tx = optax.multi_transform({"train": optax.adam(1e-2), "freeze": optax.set_to_zero()},
                               labels)

    def loss(p):
        logits = model.apply({"params": p}, TOKENS)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 2])).mean()

    grads = jax.jit(jax.grad(loss))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), params, new)
    flat_moved = jax.tree_util.tree_leaves_with_path(moved)
    flat_mask = jax.tree.leaves(mask)
    assert any(flat_mask) and not all(flat_mask)
    for (path, m), trainable in zip(flat_moved, flat_mask):
        if not trainable:
            assert not m, path
    assert all(m for (_, m), t in zip(flat_moved, flat_mask) if t and "lora_b" in str(_[-1]))
    n_train, n_all = lora.count(params, mask), lora.count(params)
    expected = sum(int(np.prod(x.shape)) for p, x in jax.tree_util.tree_leaves_with_path(params)
                   if "lora" in str(p[-1]) or str(p[0].key) in ("pooler", "classifier"))
    assert n_train == expected and n_train < n_all / 3


def test_unknown_target_is_a_readable_error(cfg):
    with pytest.raises(ValueError, match="choose among"):
        lora.apply_lora(bert.Classifier(cfg), RANK, ALPHA, "query,attn")
    with pytest.raises(ValueError, match="rank"):
        lora.apply_lora(bert.Classifier(cfg), 0, ALPHA, "query")
