"""Structured pruning: the narrower model computes exactly what the wide one computes with the
removed channels and units switched off (their batch-norm scale and shift, or their weights,
set to zero)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.compress.structured import l1_keep, shrink
from lmjax.models import baselines


def _init(model, x):
    v = model.init(jax.random.PRNGKey(0), x)
    # non-trivial batch statistics, so that the slicing of mean/var is checked too
    r = np.random.default_rng(0)
    stats = jax.tree.map(lambda a: jnp.asarray(r.uniform(0.5, 1.5, a.shape), a.dtype),
                         v.get("batch_stats", {}))
    return v["params"], ({"batch_stats": stats} if stats else {})


@pytest.mark.slow
@pytest.mark.parametrize("head_hidden", [(12,), ()])
def test_narrow_cnn_equals_wide_cnn_with_channels_off(head_hidden):
    section = {"name": "cnn", "channels": [6, 8], "convs_per_block": 1,
               "head_hidden": list(head_hidden), "dropout": 0.0, "bn_momentum": 0.9}
    wide = baselines.from_section(section, 5)
    x = np.random.default_rng(1).integers(0, 255, (4, 12, 12, 1)).astype(np.uint8)
    params, state = _init(wide, x)
    model, p, s = shrink(section, params, state, 0.5)
    assert model["channels"] == [3, 4] and model["head_hidden"] == [6] * len(head_hidden)
    narrow = baselines.from_section(model, 5)
    got = narrow.apply({"params": p, **s}, x)

    # reference: the wide model with the dropped channels' BN scale/bias (and units) zeroed
    ref = jax.tree.map(np.array, params)
    k0 = np.asarray(params["Conv_0"]["kernel"])
    keep0 = l1_keep(k0, 3)
    keep1 = l1_keep(np.asarray(params["Conv_1"]["kernel"])[:, :, keep0, :], 4)
    for i, keep in enumerate((keep0, keep1)):
        off = np.setdiff1d(np.arange(ref[f"BatchNorm_{i}"]["scale"].shape[0]), keep)
        ref[f"BatchNorm_{i}"]["scale"][off] = 0
        ref[f"BatchNorm_{i}"]["bias"][off] = 0
    if head_hidden:
        k = np.asarray(params["Dense_0"]["kernel"]).reshape(-1, 8, 12)[:, keep1, :]
        off = np.setdiff1d(np.arange(12), l1_keep(k.reshape(-1, 12), 6))
        ref["Dense_0"]["kernel"][:, off] = 0
        ref["Dense_0"]["bias"][off] = 0
    want = wide.apply({"params": ref, **state}, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    n = lambda t: sum(a.size for a in jax.tree.leaves(t))  # noqa: E731
    assert n(p) < n(params)


def test_narrow_mlp_equals_wide_mlp_with_units_off():
    section = {"name": "mlp", "hidden": [10, 8], "dropout": 0.0}
    wide = baselines.from_section(section, 3)
    x = np.random.default_rng(2).normal(size=(5, 7)).astype(np.float32)
    params, _ = _init(wide, x)
    model, p, _ = shrink(section, params, {}, 0.5)
    assert model["hidden"] == [5, 4]
    got = baselines.from_section(model, 3).apply({"params": p}, x)
    ref = jax.tree.map(np.array, params)
    keep0 = l1_keep(ref["Dense_0"]["kernel"], 5)
    keep1 = l1_keep(ref["Dense_1"]["kernel"][keep0], 4)
    for name, keep, width in (("Dense_0", keep0, 10), ("Dense_1", keep1, 8)):
        off = np.setdiff1d(np.arange(width), keep)
        ref[name]["kernel"][:, off] = 0
        ref[name]["bias"][off] = 0
    np.testing.assert_allclose(got, wide.apply({"params": ref}, x), rtol=1e-5, atol=1e-5)


def test_l1_keep_picks_largest_norms():
    k = np.zeros((2, 4))
    k[:, 1], k[:, 3] = [5, -5], [1, 1]
    np.testing.assert_array_equal(l1_keep(k, 2), [1, 3])


def test_refuses_other_models_and_bad_fractions():
    with pytest.raises(ValueError, match="CNN channels and MLP units"):
        shrink({"name": "gpt"}, {}, {}, 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        shrink({"name": "mlp"}, {}, {}, 1.0)
