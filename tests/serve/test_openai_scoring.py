"""/v1/completions as lm-eval scores against it (echo, logprobs, token-id prompts, max_tokens
0 or 1) and vLLM's tokenizer routes, on the real server (uvicorn on 127.0.0.1): the numbers
are checked against the model applied to each row alone, and lm-eval's own parser and remote
tokenizer read them."""

import httpx
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models.generator import Request

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # a real server

BLOCK = 32  # the shared server's context (conftest.py)


def _reference(generator, ids):
    """log-softmax of the model applied to the row alone (no padding, no batch): entry i is
    the distribution of token i + 1."""
    logits = np.asarray(generator.model.apply({"params": generator.params},
                                              jnp.asarray([ids])), np.float64)[0]
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_echo_logprobs_of_token_id_prompts_as_lm_eval_sends_them(url, generator):
    tok = generator.tokenizer
    prompts = [tok.encode(t).tolist() for t in ("ROMEO: what", "To be or not to be", "ab")]
    body = {"model": "tiny", "prompt": prompts, "temperature": 0, "max_tokens": 1,
            "logprobs": 1, "seed": 1234, "echo": True}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]  # one choice per prompt, in order
    for ids, c in zip(prompts, choices):
        ref = _reference(generator, ids)
        greedy = generator.generate([Request("", 1, prompt_ids=tuple(ids))])[0]
        assert c["text"] == tok.decode(ids) + greedy.text
        lp = c["logprobs"]
        assert lp["tokens"] == [tok.decode([i]) for i in ids + greedy.tokens]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        np.testing.assert_allclose(lp["token_logprobs"][1:len(ids)],
                                   ref[np.arange(len(ids) - 1), ids[1:]], atol=1e-5)
        # The generated token: the most likely after the prompt, as greedy decoding has it.
        assert np.argmax(ref[-1]) == greedy.tokens[0]
        np.testing.assert_allclose(lp["token_logprobs"][-1], ref[-1].max(), atol=1e-5)
        assert lp["text_offset"] == list(range(len(ids) + 1))  # one character per token
        for i, top in enumerate(lp["top_logprobs"][1:], 1):
            # The most likely token and the chosen one.
            best = int(np.argmax(ref[i - 1]))
            assert tok.decode([best]) in top and len(top) <= 2
            assert lp["token_logprobs"][i] == top[tok.decode([[*ids, *greedy.tokens][i]])]
    # lm-eval's own parser reads these as the continuation's log-likelihood.
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    parsed = LocalCompletionsAPI.parse_logprobs(r.json(), ctxlens=[5, 9, 1])
    for (ll, _), ids, ctx in zip(parsed, prompts, [5, 9, 1]):
        ref = _reference(generator, ids)
        assert ll == pytest.approx(sum(ref[i - 1, ids[i]] for i in range(ctx, len(ids))),
                                   abs=1e-4)


def test_max_tokens_0_with_echo_scores_the_prompt_alone(client, generator):
    r = client.completions.create(model="tiny", prompt="KING: hello", max_tokens=0, echo=True,
                                  logprobs=0, temperature=1.0)
    c = r.choices[0]
    assert c.text == "KING: hello" and r.usage.completion_tokens == 0
    assert len(c.logprobs.tokens) == 11 and c.logprobs.token_logprobs[0] is None
    ids = generator.tokenizer.encode("KING: hello").tolist()
    ref = _reference(generator, ids)
    np.testing.assert_allclose(c.logprobs.token_logprobs[1:], ref[np.arange(10), ids[1:]],
                               atol=1e-5)
    with pytest.raises(openai.BadRequestError, match="max_tokens: 0 generates nothing") as e:
        client.completions.create(model="tiny", prompt="a", max_tokens=0)
    assert e.value.body["param"] == "max_tokens"


def test_logprobs_of_sampled_completions_are_the_models_own(client, generator):
    r = client.completions.create(model="tiny", prompt=["KING:", "ab"], max_tokens=6,
                                  temperature=0.9, seed=7, n=2, logprobs=3)
    for i, c in enumerate(r.choices):
        prompt = ["KING:", "ab"][i // 2]
        alone = generator.generate([Request(prompt, 6, temperature=0.9, seed=7 + i % 2)])[0]
        assert c.text == alone.text
        ids = generator.tokenizer.encode(prompt).tolist() + alone.tokens
        ref = _reference(generator, ids)
        n = len(ids) - len(alone.tokens)
        assert c.logprobs.tokens == [generator.tokenizer.decode([t]) for t in alone.tokens]
        np.testing.assert_allclose(c.logprobs.token_logprobs,
                                   ref[np.arange(n - 1, len(ids) - 1), ids[n:]], atol=1e-5)
        assert c.logprobs.text_offset == list(range(len(alone.tokens)))
        assert all(len(top) <= 4 for top in c.logprobs.top_logprobs)


def test_the_tokenizer_routes_serve_lm_evals_remote_tokenizer(url, generator):
    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    base = f"{url}/v1/completions"
    assert check_remote_tokenizer_support(base)
    remote = RemoteTokenizer(base)
    ids = remote.encode("To be: or not")
    assert ids == generator.tokenizer.encode("To be: or not").tolist()
    assert remote.decode(ids) == "To be: or not"
    assert remote.eos_token is None  # a character run has no end-of-text token
    info = httpx.get(f"{url}/tokenizer_info").json()
    assert info["model_max_length"] == BLOCK
    assert info["vocab_size"] == generator.tokenizer.vocab_size
    chat = httpx.post(f"{url}/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert generator.tokenizer.decode(chat.json()["tokens"]) == "Question: Hi\nAnswer: "
    bad = httpx.post(f"{url}/detokenize", json={"tokens": [1, 10_000]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_refused_fields_are_named_and_unknown_ones_tolerated(client, url):
    cases = [(dict(echo=True, stream=True), "echo"), (dict(logit_bias={"3": 5}), "logit_bias"),
             (dict(best_of=2), "best_of"), (dict(frequency_penalty=0.5), "frequency_penalty"),
             (dict(prompt=[[1, 2, 99999]]), "prompt"), (dict(logprobs=50), "logprobs")]
    for extra, field in cases:
        kw = {"model": "tiny", "prompt": "ab", "max_tokens": 2, **extra}
        with pytest.raises(openai.BadRequestError, match=field) as e:
            client.completions.create(**kw)
        assert e.value.body["param"] == field, (extra, e.value.body)
    r = client.completions.with_raw_response.create(
        model="tiny", prompt="ab", max_tokens=2, temperature=0,
        extra_body={"repetition_penalty": 1.0, "do_sample": False})
    assert r.headers["lmjax-ignored-fields"] == "do_sample, repetition_penalty"
    assert r.parse().choices[0].finish_reason == "length"
    # The prompt may fill the context when only scoring; generating needs room.
    full = list(range(1, BLOCK + 1))
    ok = httpx.post(f"{url}/v1/completions", json={
        "model": "tiny", "prompt": full, "echo": True, "logprobs": 0, "max_tokens": 1,
        "temperature": 0})
    assert ok.status_code == 200 and len(ok.json()["choices"][0]["logprobs"]["tokens"]) == 33
    with pytest.raises(openai.BadRequestError, match="context of 32"):
        client.completions.create(model="tiny", prompt=full, max_tokens=1)
