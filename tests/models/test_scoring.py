"""`decoding.score` and the batching `Scorer` around it: each token's log-probability given
the ones before, on right-padded rows, equal to a row scored alone through the plain forward
pass (an independent reference: NumPy's log-softmax of each prefix's last logits)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.eval.scoring import Scorer
from lmjax.models import decoding as dec
from lmjax.models.gpt import GPT
from lmjax.models.rnn import RNNLM


def _init(model, seed=0):
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32)))
    return jax.tree.map(lambda x: x * 4, params["params"])  # peaked predictions


def _reference(apply, params, row):
    """log p(row[i] | row[:i]) for i >= 1, each from the last logits of the prefix alone
    (`apply`: the model's, jitted: compiled once per prefix length, faster than eager)."""
    out = []
    for i in range(1, len(row)):
        logits = np.asarray(apply({"params": params}, jnp.asarray([row[:i]])))[0, -1]
        logits = logits.astype(np.float64)
        logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        out.append((logp[row[i]], int(np.argmax(logp)), np.sort(logp)[::-1][:3]))
    return out


CONTEXT = 8  # a short context: the reference compiles once per prefix length


@pytest.mark.parametrize("kind", ["gpt", pytest.param("rnn", marks=pytest.mark.slow)])
def test_score_is_each_prefix_alone_on_right_padded_rows(gpt_config, rnn_config, kind):
    rng = np.random.default_rng(0)
    model = (GPT(gpt_config(block_size=CONTEXT)) if kind == "gpt" else
             RNNLM(rnn_config(vocab_size=50, block_size=CONTEXT)))
    params = _init(model)
    full = CONTEXT + 1  # a row of the context plus the token after it
    lengths = (5, 3, full)
    rows = [rng.integers(0, 50, n).tolist() for n in lengths]
    tokens = np.zeros((4, full), np.int32)
    for b, r in enumerate(rows):
        tokens[b, :len(r)] = r
        tokens[b, len(r):] = rng.integers(0, 50, full - len(r))  # padding: anything
    s = dec.score(model, params, tokens, np.array([*lengths, 0]), top_k=3)
    assert s.logprobs.shape == (4, CONTEXT) and s.top_ids.shape == (4, CONTEXT, 3)
    apply = jax.jit(model.apply)
    for b, r in enumerate(rows):
        ref = _reference(apply, params, r)
        np.testing.assert_allclose(s.logprobs[b, :len(r) - 1], [x[0] for x in ref], atol=2e-5)
        assert s.greedy[b, :len(r) - 1].tolist() == [x[1] for x in ref]
        np.testing.assert_allclose(s.top_logprobs[b, :len(r) - 1], [x[2] for x in ref],
                                   atol=2e-5)
        assert (s.logprobs[b, len(r) - 1:] == 0).all()  # past the row's end
    assert (s.logprobs[3] == 0).all()


def test_token_logprobs_is_differentiable_and_normalised():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 7)), jnp.float32)
    targets = jnp.asarray([[0, 1, 2], [6, 5, 4]])
    lp = dec.token_logprobs(logits, targets)
    total = jax.nn.logsumexp(jnp.stack([dec.token_logprobs(logits, jnp.full_like(targets, v))
                                        for v in range(7)]), axis=0)
    np.testing.assert_allclose(total, 0.0, atol=1e-6)
    grad = jax.grad(lambda x: dec.token_logprobs(x, targets).sum())(logits)
    np.testing.assert_allclose(grad.sum(-1), 0.0, atol=1e-6)  # softmax's gradient sums to 0


def test_the_scorer_batches_by_length_and_keeps_the_order(gpt_config):
    model = GPT(gpt_config(block_size=32))
    params = _init(model, seed=1)
    rng = np.random.default_rng(2)
    rows = [rng.integers(0, 50, n).tolist() for n in (5, 33, 2, 17, 1, 9, 30)]
    # max_tokens 64: the 33-token row alone (a bucket of 33), then 2 rows of 32, ...
    together = Scorer(model, params, max_batch=4, max_tokens=64)(rows, top_k=2)
    for row, got in zip(rows, together):
        alone = Scorer(model, params)([row], top_k=2)[0]
        assert got.logprobs.shape == (len(row) - 1,) and got.top_ids.shape == (len(row) - 1, 2)
        np.testing.assert_allclose(got.logprobs, alone.logprobs, atol=1e-5)
        np.testing.assert_array_equal(got.greedy, alone.greedy)
        np.testing.assert_array_equal(got.top_ids, alone.top_ids)
