"""The convolution rewrite that keeps XLA:CPU's fast kernels inside loops changes nothing but
speed."""

import jax
import pytest
import jax.numpy as jnp
import numpy as np

from lmjax.parallel.cpu_convs import canonical_convs

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite


def test_canonical_convolutions_have_the_same_values_and_gradients():
    """Same outputs and gradients as JAX's own, for several paddings and with a strided
    convolution left as it was."""
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    x = jax.random.normal(k[0], (3, 9, 7, 2))
    w1, w2, w3 = (jax.random.normal(k[1], (3, 3, 2, 4)), jax.random.normal(k[2], (2, 3, 4, 5)),
                  jax.random.normal(k[3], (3, 3, 5, 3)))
    dn = ("NHWC", "HWIO", "NHWC")

    def f(ws, x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, ws[0], (1, 1), "SAME",
                                                     dimension_numbers=dn))
        h = jnp.tanh(jax.lax.conv_general_dilated(h, ws[1], (1, 1), ((0, 1), (2, 0)),
                                                  dimension_numbers=dn))
        h = jax.lax.conv_general_dilated(h, ws[2], (2, 2), "VALID", dimension_numbers=dn)
        return (h ** 2).mean()

    ws = (w1, w2, w3)
    both = jax.jit(lambda fn, ws, x: jax.value_and_grad(fn, argnums=(0, 1))(ws, x),
                   static_argnums=0)
    got, want = both(canonical_convs(f), ws, x), both(f, ws, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
