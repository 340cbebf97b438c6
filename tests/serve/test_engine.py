"""The slot engine: a request's output equals the prompt run alone through the Generator,
whatever joins or leaves around it; slots are freed at stop strings, limits and cancels."""

import asyncio
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.models.generator import Generator, Request
from lmjax.models.rnn import RNNConfig, RNNLM
from lmjax.serve import engine as eng
from lmjax.serve.batcher import Busy

BLOCK = 48


@pytest.fixture(scope="module")
def generator(tiny_generator):
    return tiny_generator(BLOCK, num_layers=2)


@pytest.fixture(scope="module")
def engine(generator):
    e = eng.Engine(generator, max_slots=4, max_queue=8, prefill_tokens=16)
    yield e
    e.close()


async def _result(job):
    pieces = []
    while True:
        kind, value = await asyncio.wait_for(job.events.get(), 120)  # never hang the suite
        if kind == "text":
            pieces.append(value)
        elif kind == "error":
            raise AssertionError(value)
        else:
            return value, "".join(pieces)


@pytest.mark.slow
def test_per_row_cache_index_gives_the_full_model_logits(generator):
    """Rows at different positions in one step: each row's logits are the full model's."""
    model, params = generator.model, generator.params
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, model.cfg.vocab_size)
    full = jax.jit(model.apply)({"params": params}, tokens)
    apply = jax.jit(lambda t, p, c: model.apply({"params": params}, t, positions=p, cache=c))
    cache = model.init_cache(2, 16)
    _, cache = apply(tokens[:, :8], jnp.broadcast_to(jnp.arange(8), (2, 8)), cache)
    cache = cache.replace(index=jnp.asarray([5, 8], jnp.int32))  # row 0 rewinds to 5 tokens
    pos = cache.index[:, None]
    step = tokens[jnp.arange(2), cache.index][:, None]
    logits, cache = apply(step, pos, cache)
    np.testing.assert_allclose(logits[0, 0], full[0, 5], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(logits[1, 0], full[1, 8], atol=1e-4, rtol=1e-5)
    assert cache.index.tolist() == [6, 9]


@pytest.mark.slow
def test_requests_joining_mid_stream_equal_the_prompts_run_alone(engine, generator):
    first = [Request("ROMEO:", 30), Request("a", 12, temperature=1.0, seed=7),
             Request("Good morrow.", 20, temperature=0.7, top_k=5, top_p=0.9, seed=3)]
    later = [Request("KING:", 25, temperature=0.9, seed=1), Request("b", 8),
             Request("To be or not", 30, temperature=1.2, seed=11), Request("x y", 5)]

    async def run():
        jobs = [engine.submit(r, stream=i == 0) for i, r in enumerate(first)]
        kind, piece = await jobs[0].events.get()  # the first stream is under way ...
        assert kind == "text"
        seen.append(piece)
        # ... when more requests arrive than there are free slots: some wait for one to free
        jobs += [engine.submit(r, stream=True) for r in later]
        return await asyncio.gather(*(_result(j) for j in jobs))

    seen = []
    results = asyncio.run(run())
    results[0] = (results[0][0], seen[0] + results[0][1])
    for r, (row, streamed) in zip(first + later, results):
        alone = generator.generate([r])[0]
        assert row.tokens == alone.tokens and row.text == alone.text
        assert row.finish_reason == "length" and len(row.tokens) == r.max_new_tokens
    streams = [results[0]] + results[len(first):]
    assert [s for _, s in streams] == [row.text for row, _ in streams]
    assert engine.live_count() == 0 and not engine.waiting


def test_stop_strings_end_a_request_and_free_its_slot(engine, generator):
    free = generator.generate([Request("KING:", 30)])[0].text
    stop = free[6:8]

    async def run():
        return await _result(engine.submit(Request("KING:", 30, stop=(stop,)), stream=True))

    row, streamed = asyncio.run(run())
    assert row.text == free[:free.find(stop)] == streamed and row.finish_reason == "stop"
    assert engine.live_count() == 0


def test_a_cancelled_request_frees_its_slot_and_a_full_queue_is_refused(generator):
    e = eng.Engine(generator, max_slots=1, max_queue=1)
    original = e._step

    def slow_step():  # a slow model: the request is certainly still running when cancelled
        time.sleep(0.02)
        original()

    e._step = slow_step

    async def run():
        job = e.submit(Request("ROMEO:", 40), stream=True)
        assert (await job.events.get())[0] == "text"
        waiting = e.submit(Request("a", 3))
        with pytest.raises(Busy) as refused:
            e.submit(Request("b", 3))
        job.cancel()
        done = await _result(waiting)  # gets the slot as soon as the cancel is seen
        return refused.value, done, job

    refused, (row, _), job = asyncio.run(run())
    e.close()
    assert refused.status == 429 and "queue" in str(refused)
    assert len(row.tokens) == 3
    kind, cancelled = job.events.get_nowait() if job.events.qsize() else (None, None)
    while job.events.qsize():
        kind, cancelled = job.events.get_nowait()
    assert kind == "done" and cancelled.finish_reason == "cancelled"
    assert len(cancelled.tokens) < 20


def test_prompt_buckets_are_few_powers_of_two():
    assert {eng.bucket(n, 512) for n in range(1, 512)} == {16, 32, 64, 128, 256, 512}
    assert eng.bucket(100, 128) == 128 and eng.bucket(100, 100) == 100


def test_the_engines_keys_are_the_generators():
    for seed in (0, 7, 2**31 + 5, 2**32 - 1):
        np.testing.assert_array_equal(eng.sampling_for(Request("", seed=seed)).keys[0],
                                      np.asarray(jax.random.PRNGKey(seed)))


@pytest.mark.slow
def test_an_lstm_serves_through_the_slots_as_it_generates_alone():
    """The slots hold an RNN's state instead of keys and values: requests that share steps
    still get the tokens each gets alone."""
    tokenizer = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ:\n"])
    model = RNNLM(RNNConfig(vocab_size=tokenizer.vocab_size, block_size=BLOCK, d_model=16))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    gen = Generator(model, jax.tree.map(lambda x: x * 4, params), tokenizer)
    requests = [Request("ROMEO:", 20), Request("a", 12, temperature=1.0, seed=7),
                Request("KING:", 16, temperature=0.8, top_k=5, seed=3)]
    e = eng.Engine(gen, max_slots=2, max_queue=8)

    async def run():
        return await asyncio.gather(*(_result(e.submit(r, stream=True)) for r in requests))

    try:
        results = asyncio.run(run())
    finally:
        e.close()
    for r, (row, streamed) in zip(requests, results):
        assert row.tokens == gen.generate([r])[0].tokens and streamed == row.text
    assert len({tuple(row.tokens) for row, _ in results}) == 3
