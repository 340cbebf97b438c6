"""The recurrent language model: its LSTM cell against NumPy, and causality over time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models.rnn import RNNLM


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _numpy_lstm(p, xs, hidden):
    """The textbook LSTM: i, f, g, o gates from input and previous hidden state."""
    h, c, outs = np.zeros(hidden), np.zeros(hidden), []
    for x in xs:
        gate = {k: x @ p[f"i{k}"]["kernel"] + h @ p[f"h{k}"]["kernel"] + p[f"h{k}"]["bias"]
                for k in "ifgo"}
        c = _sigmoid(gate["f"]) * c + _sigmoid(gate["i"]) * np.tanh(gate["g"])
        h = _sigmoid(gate["o"]) * np.tanh(c)
        outs.append(h)
    return np.stack(outs)


@pytest.fixture(scope="module")
def make_rnn(rnn_config):
    """One layer of 6 units over 11 token ids (`rnn_config` in tests/conftest.py)."""
    return lambda name="lstm": RNNLM(rnn_config(name=name))


@pytest.mark.slow
def test_lstm_layer_equals_numpy_on_tiny_weights(make_rnn):
    model = make_rnn()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 7)), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                          params)  # away from the initialiser's zeros
    p = jax.tree.map(np.asarray, params)
    _, states = model.apply({"params": params}, tokens, capture_intermediates=True,
                            mutable=["intermediates"])
    hidden = np.asarray(states["intermediates"]["layer_0"]["__call__"][0])
    for row in range(2):
        xs = p["embed"]["embedding"][np.asarray(tokens[row])]
        np.testing.assert_allclose(hidden[row], _numpy_lstm(p["lstm_0"], xs, 6),
                                   rtol=1e-5, atol=1e-6)
    logits = model.apply({"params": params}, tokens)
    np.testing.assert_allclose(logits, hidden @ p["head"]["kernel"] + p["head"]["bias"],
                               rtol=1e-5, atol=1e-5)


def test_outputs_depend_only_on_earlier_tokens(make_rnn):
    for name in ("lstm", "gru"):
        rnn = make_rnn(name)
        tokens = jnp.zeros((1, 8), jnp.int32)
        params = rnn.init(jax.random.PRNGKey(0), tokens)
        a = rnn.apply(params, tokens)
        b = rnn.apply(params, tokens.at[0, 5].set(3))
        np.testing.assert_allclose(a[0, :5], b[0, :5])
        assert not np.allclose(a[0, 5:], b[0, 5:])
