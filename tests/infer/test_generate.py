"""Decoding with a cache (a transformer's keys and values, an RNN's state) against the full
model re-run on the whole sequence, batches against single rows, sampling filters against a
NumPy formula."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.models import decoding as dec
from lmjax.models.generator import Generator, Request
from lmjax.models.gpt import GPT, stack_layers
from lmjax.models.rnn import RNNConfig, RNNLM

TOKENIZER = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLM.,:;!?\n"])


@pytest.fixture(scope="module")
def make_model(gpt_config):
    """(model, chaotic parameters): 2 layers, d_model 32, context 32 over TOKENIZER's ids."""
    def build(scan_layers=False):
        model = GPT(gpt_config(vocab_size=TOKENIZER.vocab_size, block_size=32,
                               scan_layers=scan_layers))
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
        return model, _chaotic(nn.meta.unbox(shapes)["params"])

    return build


def _chaotic(params, gain=3.0):
    """Weights with more gain than a training init: an untrained model's greedy output then
    varies instead of repeating one character, so token-by-token comparisons mean something."""
    rng = np.random.default_rng(0)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    new = []
    for path, x in leaves:
        name, normal = jax.tree_util.keystr(path), rng.standard_normal(x.shape)
        if "scale" in name:
            new.append(np.ones(x.shape))
        elif "bias" in name:
            new.append(0.1 * normal)
        elif "wte" in name or "wpe" in name:
            new.append(normal)
        else:  # kernels: (inputs..., outputs...); the attention output reads (heads, head_dim)
            fan_in = x.shape[-4 if "qkv" in name else 0] * (x.shape[-2] if "out" in name else 1)
            new.append(gain * normal / np.sqrt(fan_in))
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x, jnp.float32) for x in new])


def greedy_reference(model, params, prompt: list[int], new: int) -> list[int]:
    """Greedy tokens without a cache: the full model on the whole sequence at every step (one
    right-padded buffer of the context; a causal model's last real token ignores the padding)."""
    apply = jax.jit(lambda x: model.apply({"params": params}, x))
    buf = np.zeros((1, model.cfg.block_size), np.int32)
    buf[0, :len(prompt)] = prompt
    for t in range(len(prompt), len(prompt) + new):
        buf[0, t] = int(np.argmax(np.asarray(apply(buf))[0, t - 1]))
    return buf[0, len(prompt):len(prompt) + new].tolist()


@pytest.fixture(scope="module")
def gen(make_model):
    return Generator(*make_model(), TOKENIZER)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_greedy_equals_uncached_greedy(scan_layers, gen, make_model):
    prompt = "ROMEO:"
    model, params = make_model(scan_layers)
    # The same parameters in nn.scan's layout (a leading layers axis): the generator unrolls
    # them for decoding.
    g = gen if not scan_layers else Generator(model, _stacked(gen.params), TOKENIZER)
    out = g.generate([Request(prompt, max_new_tokens=32 - len(prompt))])[0]
    ref = greedy_reference(gen.model, gen.params, TOKENIZER.encode(prompt).tolist(),
                           32 - len(prompt))
    assert out.tokens == ref
    assert len(set(out.tokens)) > 3, out.tokens  # not a degenerate repetition


def _stacked(params):
    return stack_layers(params, 2)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_prefill_and_steps_give_the_full_model_logits(gen, scan_layers, make_model):
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, TOKENIZER.vocab_size)
    full = jax.jit(gen.model.apply)({"params": gen.params}, tokens)
    model = make_model(scan_layers)[0]  # the cache rides in nn.scan's carry when layers are scanned
    params = _stacked(gen.params) if scan_layers else gen.params
    apply = jax.jit(lambda t, p, c: model.apply({"params": params}, t, positions=p, cache=c))
    pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
    first, cache = apply(tokens[:, :8], pos[:, :8], model.init_cache(2, 16))
    steps = [first]
    for t in range(8, 12):
        logits, cache = apply(tokens[:, t:t + 1], pos[:, t:t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("cell", [pytest.param("lstm", marks=pytest.mark.slow), "gru"])
def test_an_rnn_decodes_with_its_state_as_the_cache(cell):
    """The same decoder serves a recurrent model: greedy tokens equal the full model's, and
    left padding in a batch leaves a row's state (and so its tokens) as when it runs alone."""
    model = RNNLM(RNNConfig(name=cell, vocab_size=TOKENIZER.vocab_size, block_size=32,
                            d_model=16, num_layers=2))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    # Matrices with gain 2 (biases as initialised): greedy output that varies, as in _chaotic.
    params = jax.tree_util.tree_unflatten(treedef, [
        2 * jax.random.normal(k, x.shape) / np.sqrt(x.shape[0]) if x.ndim == 2 else x
        for k, x in zip(keys, leaves)])
    g = Generator(model, params, TOKENIZER)
    out = g.generate([Request("ROMEO:", 26)])[0]
    assert out.tokens == greedy_reference(model, params, TOKENIZER.encode("ROMEO:").tolist(), 26)
    assert len(set(out.tokens)) > 3, out.tokens
    requests = [Request("ROMEO:", 20), Request("a", 25, temperature=1.0, seed=7),
                Request("Good morrow.", 15, temperature=0.7, top_k=5, seed=3)]
    for r, row in zip(requests, g.generate(requests)):
        assert row.tokens == g.generate([r])[0].tokens


def test_padded_batch_rows_equal_the_prompts_run_alone(gen):
    requests = [Request("ROMEO:", 20), Request("a", 25, temperature=1.0, seed=7),
                Request("Good morrow.", 15, temperature=0.7, top_k=5, top_p=0.9, seed=3)]
    together = gen.generate(requests)
    for r, row in zip(requests, together):
        alone = gen.generate([r])[0]
        assert row.tokens == alone.tokens and row.text == alone.text
        assert len(row.tokens) == r.max_new_tokens and row.finish_reason == "length"


def test_stop_strings_cut_the_text(gen):
    free = gen.generate([Request("ROMEO:", 26)])[0].text
    stop = free[6:8]
    first = free.find(stop)
    out = gen.generate([Request("ROMEO:", 26, stop=("zzzz", stop))])[0]
    assert out.text == free[:first] and out.finish_reason == "stop"
    assert TOKENIZER.decode(out.tokens) == free[:first + len(stop)]


def test_streaming_gives_the_same_text(gen):
    requests = [Request("ROMEO:", 20), Request("To be", 12, temperature=0.9, seed=1),
                Request("b", 5)]
    pieces = [""] * len(requests)
    for rows in gen.stream(requests, chunk=4):
        for i, row in enumerate(rows):
            pieces[i] += row.take_new()
    assert pieces == [c.text for c in gen.generate(requests)]


def test_outputs_longer_than_the_context(gen):
    out = gen.generate([Request("ROMEO:", 70)])
    assert len(out[0].tokens) == 70
    # Within the context the tokens are those of a run that stops there.
    assert out[0].tokens[:26] == gen.generate([Request("ROMEO:", 26)])[0].tokens


def test_the_stop_table_has_a_bounded_set_of_shapes(gen):
    shapes = {gen._arrays([TOKENIZER.encode("ab")], [Request("ab", 2, stop=("q" * n,) * k)],
                          [0], [2])[3].shape for n in range(1, 200) for k in range(1, 12)}
    # 4 or 8 sequences of 8, 16 or 32 (the context) tokens; longer ones are cut on the host.
    assert shapes == {(1, count, width) for count in (4, 8) for width in (8, 16, 32)}


def test_stop_strings_of_many_lengths_compile_a_bounded_number_of_programs(gen):
    compiled = lambda: dec.begin._cache_size() + dec.decode._cache_size()  # noqa: E731
    gen.generate([Request("ab", 2, stop=("q",))])
    before = compiled()
    # (Lengths 9-16 would add the 16-token table: another 4 s compile, no more to learn.)
    for n in [*range(1, 9), *range(17, 121)]:
        gen.generate([Request("ab", 2, stop=("q" * n,))])
    assert compiled() - before <= 2  # the 32-token table's prefill and decode; once


def test_stops_longer_than_the_context_still_cut_the_text(gen):
    free = gen.generate([Request("ROMEO:", 70)])[0].text  # compiled by the test above
    stop = free[10:50]  # 40 characters; the context is 32
    out = gen.generate([Request("ROMEO:", 70, stop=(stop,))])[0]
    assert out.text == free[:free.find(stop)] and out.finish_reason == "stop"


def test_decoding_is_one_device_loop(gen):
    args = gen._arrays([TOKENIZER.encode("ab")], [Request("ab", 10)], [0], [10])
    state = dec.begin(gen.model, gen.params, *args, slots=80)
    text = dec.decode.lower(gen.model, gen.params, state, jnp.asarray(9, jnp.int32),
                            capacity=64).as_text()
    assert "stablehlo.while" in text


def _reference_filter(logits, temperature, top_k, top_p):
    x = logits / temperature
    order = np.argsort(-x, kind="stable")
    keep = np.zeros_like(x, bool)
    keep[order[:top_k or len(x)]] = True
    p = np.exp(x - x[keep].max()) * keep
    p /= p.sum()
    mass = 0.0
    nucleus = np.zeros_like(keep)
    for i in order:
        if not keep[i] or mass >= top_p:
            break
        nucleus[i] = True
        mass += p[i]
    return np.where(nucleus, x, -np.inf)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0),
                                                     (1.3, 0, 0.8), (1.0, 10, 0.5)])
def test_filter_logits_matches_numpy(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(size=(3, 40)).astype(np.float32) * 2
    got = dec.filter_logits(jnp.asarray(logits), jnp.full((3,), temperature),
                            jnp.full((3,), top_k), jnp.full((3,), top_p))
    for row, g in zip(logits, np.asarray(got)):
        np.testing.assert_allclose(g, _reference_filter(row, temperature, top_k, top_p),
                                   rtol=1e-6)


def test_sampling_follows_the_softmax():
    logits = jnp.asarray([[2.0, 1.0, 0.0, -1.0]])
    n = 20000
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    s = dec.Sampling(temperature=jnp.ones((1,)), top_k=jnp.zeros((1,), jnp.int32),
                     top_p=jnp.ones((1,)), keys=keys[:1], offset=jnp.zeros((1,), jnp.int32))
    draws = jax.vmap(lambda k: dec.sample(logits, s.replace(keys=k[None]), jnp.asarray(0)))(keys)
    freq = np.bincount(np.asarray(draws).ravel(), minlength=4) / n
    np.testing.assert_allclose(freq, jax.nn.softmax(logits[0]), atol=0.015)


def test_a_draw_never_takes_a_filtered_token():
    # Tokens 0 and 3 are cut (top-k 2): 2,000 draws take only 1 and 2, the first included.
    logits = jnp.asarray([[-1.0, 2.0, 1.5, -3.0]] * 4)
    filtered = dec.filter_logits(logits, jnp.ones((4,)), jnp.full((4,), 2), jnp.ones((4,)))
    draws = jax.vmap(lambda k: dec.categorical(k, filtered))(
        jax.random.split(jax.random.PRNGKey(1), 2000).reshape(500, 4, 2))
    assert set(np.unique(np.asarray(draws))) == {1, 2}
