"""Canary exposure (lmjax/privacy/exposure.py) against NumPy references and a hand-made model."""

import math

import numpy as np
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.privacy import exposure


def test_sampled_exposure_is_minus_log2_of_the_rank_fraction():
    rng = np.random.default_rng(0)
    nll = rng.normal(20.0, 2.0, size=999)
    for better in (0, 9, 99, 998):
        canary = np.sort(nll)[better] - 1e-9 if better < 999 else nll.max() + 1
        expected = math.log2(1000) - math.log2(1 + better)  # log2 |R| - log2 rank, |R| = n + 1
        assert exposure.sampled_exposure(canary, nll) == pytest.approx(expected)
    # A model that cannot tell candidates apart: ties count half, about 1 bit.
    assert exposure.sampled_exposure(5.0, np.full(999, 5.0)) == pytest.approx(
        -math.log2((1 + 499.5) / 1000))


def test_extrapolated_exposure_follows_the_fitted_distribution():
    rng = np.random.default_rng(1)
    nll = rng.normal(20.0, 2.0, size=4000)
    from scipy import stats

    bits = exposure.extrapolated_exposure(20.0 - 3 * 2.0, nll, space=1e9)
    assert bits == pytest.approx(-math.log2(stats.norm.cdf(-3.0)), rel=0.1)  # 9.4 bits
    assert exposure.extrapolated_exposure(-1e6, nll, space=1e9) == pytest.approx(math.log2(1e9))


def test_insert_canaries_counts_and_keeps_the_text():
    text = "\n".join(f"line {i}" for i in range(50))
    canaries = {"My ID is 123456789.": 7, "My ID is 000000001.": 1}
    out = exposure.insert_canaries(text, canaries, seed=3)
    assert exposure.count_canary(out, "My ID is 123456789.") == 7
    assert exposure.count_canary(out, "My ID is 000000001.") == 1
    kept = [line for line in out.split("\n") if not line.startswith("My ID")]
    assert kept == text.split("\n")
    with pytest.raises(ValueError, match="spans lines"):
        exposure.insert_canaries(text, {"a\nb": 1})


def _model(tokenizer, secret: str, strength: float):
    """A hand-made 'model': after the prefix, favours the secret's next digit by `strength`
    nats at every position; elsewhere uniform."""
    vocab = tokenizer.vocab_size
    digit_ids = tokenizer.encode(secret)

    def logprob_fn(ids):
        b, t = ids.shape
        logits = np.zeros((b, t, vocab))
        start = len(exposure.DEFAULT_PREFIX) - 1  # position predicting the first digit
        for j, d in enumerate(digit_ids):
            if start + j < t:
                logits[:, start + j, d] += strength
        return logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    return logprob_fn


def test_secret_nlls_match_a_direct_sum_and_a_memorised_canary_is_exposed():
    tok = CharTokenizer.train(["My ID is 0123456789."])
    secret = "281739452"
    fn = _model(tok, secret, strength=3.0)
    nlls = exposure.secret_nlls(fn, tok, exposure.DEFAULT_PREFIX, [secret, "000000000"], ".",
                                batch_size=4)
    vocab = tok.vocab_size
    hit = -(3.0 - math.log(math.exp(3.0) + vocab - 1))   # NLL of the favoured digit
    miss = math.log(math.exp(3.0) + vocab - 1)           # NLL of another digit
    uniform = math.log(vocab)                            # '.' at the end
    assert nlls[0] == pytest.approx(9 * hit + uniform)
    # "000000000" shares no digit with the secret except where they coincide (none here).
    assert nlls[1] == pytest.approx(9 * miss + uniform)

    e = exposure.measure(fn, tok, f"My ID is {secret}.", candidates=2000, batch_size=512)
    assert e.sampled == pytest.approx(math.log2(e.candidates + 1))  # ranked first
    assert e.extrapolated > 15
    flat = exposure.measure(_model(tok, secret, 0.0), tok, f"My ID is {secret}.",
                            candidates=2000, batch_size=512)
    assert flat.sampled < 1.01 and flat.extrapolated == 1.0
    with pytest.raises(ValueError, match="must be digits"):
        exposure.measure(fn, tok, "My ID is secret.")


@pytest.mark.slow
def test_a_real_gpt_scores_candidates_as_its_own_log_softmax_says():
    import jax
    import jax.numpy as jnp

    from lmjax.models.gpt import GPT, GPTConfig

    tok = CharTokenizer.train(["My ID is 0123456789."])
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, d_model=16, num_heads=2, num_layers=1,
                          block_size=32))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    secrets = ["281739452", "000000000", "999999999"]
    got = exposure.secret_nlls(exposure.model_logprob_fn(model, params), tok,
                               exposure.DEFAULT_PREFIX, secrets, ".", batch_size=2)
    for secret, nll in zip(secrets, got):  # one sequence at a time, by hand
        ids = tok.encode(exposure.DEFAULT_PREFIX + secret + ".")
        lp = jax.nn.log_softmax(model.apply({"params": params}, jnp.asarray(ids[None])), -1)[0]
        start = len(exposure.DEFAULT_PREFIX)
        want = -sum(float(lp[i - 1, ids[i]]) for i in range(start, len(ids)))
        assert nll == pytest.approx(want, rel=1e-5)
