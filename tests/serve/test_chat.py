"""/v1/chat/completions through the official `openai` client against the real server: the
reply is the generator's continuation of the run's chat rendering, streamed or not; refused
requests raise the client's own error; a Hugging Face template on the tokenizer is used."""

import httpx
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data.chat import ChatFormat, HFChat
from lmjax.data.tokenizers import CharTokenizer
from lmjax.models.generator import Generator, Request
from lmjax.serve.app import QA, create_app
from lmjax.serve.local import serve_in_thread

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # a real server

BLOCK = 64
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is he"}]


@pytest.fixture(scope="module")
def generator(tiny_generator):
    return tiny_generator(BLOCK)


@pytest.fixture(scope="module")
def client(generator):
    qa = QA("Q: {prompt}\nA: {response}", ("\n\n",), end="\n")
    app = create_app(generator, model_name="tiny", max_slots=4, qa=qa)
    with serve_in_thread(app) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


def _alone(generator, text, n, stop, **kw):
    return generator.generate([Request(text, n, stop=stop, **kw)])[0]


def test_a_chat_reply_is_the_continuation_of_the_runs_rendering(client, generator):
    # An SFT run's template and end marker: its turns end with "\n", the reply stops there.
    text = "Be brief.\nQ: Who is he\nA: "
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12,
                                       temperature=0)
    alone = _alone(generator, text, 12, ("\n",))
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == alone.text
    assert r.choices[0].finish_reason == alone.finish_reason
    assert r.usage.prompt_tokens == len(text) and r.usage.completion_tokens == len(alone.tokens)
    # max_completion_tokens, stop, n with a seed, developer messages and content parts.
    r = client.chat.completions.create(
        model="tiny", n=2, seed=4, temperature=0.9, max_completion_tokens=8, stop=["zz"],
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Who "},
                                               {"type": "text", "text": "is he"}]}])
    assert [c.message.content for c in r.choices] == [
        _alone(generator, text, 8, ("zz", "\n"), temperature=0.9, seed=4 + j).text
        for j in range(2)]


def test_streamed_replies_equal_the_plain_ones(client):
    for kw in (dict(temperature=0), dict(temperature=0.8, seed=3, n=2)):
        plain = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, **kw)
        chunks = list(client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=16, stream=True,
            stream_options={"include_usage": True}, **kw))
        texts = {}
        for c in chunks:
            for ch in c.choices:
                texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
        assert [texts[c.index] for c in plain.choices] == [c.message.content
                                                           for c in plain.choices]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
        assert chunks[0].object == "chat.completion.chunk"


def test_reply_logprobs_are_the_models_own(client, generator):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6,
                                       temperature=0, logprobs=True, top_logprobs=2)
    ids = generator.tokenizer.encode("Be brief.\nQ: Who is he\nA: ").tolist()
    reply = _alone(generator, "Be brief.\nQ: Who is he\nA: ", 6, ("\n",))
    row = ids + reply.tokens
    logits = np.asarray(generator.model.apply({"params": generator.params},
                                              jnp.asarray([row])), np.float64)[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    content = r.choices[0].logprobs.content
    assert [c.token for c in content] == [generator.tokenizer.decode([t]) for t in reply.tokens]
    np.testing.assert_allclose([c.logprob for c in content],
                               [logp[i - 1, row[i]] for i in range(len(ids), len(row))],
                               atol=1e-5)
    assert all(len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.logprob - 1e-6
               for c in content)  # greedy: the chosen token is the most likely


def test_tools_and_other_refusals_raise_the_clients_errors(client):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError, match="tools and function calling") as e:
        client.chat.completions.create(model="tiny", messages=CHAT, tools=[tool])
    assert e.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError, match="tool and function messages"):
        client.chat.completions.create(model="tiny", messages=CHAT + [
            {"role": "tool", "tool_call_id": "1", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="only text parts"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}])
    with pytest.raises(openai.BadRequestError, match="logprobs with stream"):
        client.chat.completions.create(model="tiny", messages=CHAT, logprobs=True, stream=True)
    with pytest.raises(openai.BadRequestError, match="context of 64"):
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=60)
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        client.chat.completions.create(model="gpt-4o", messages=CHAT)


def test_a_hugging_face_template_on_the_tokenizer_renders_the_chat(gpt_config):
    import flax.linen as nn
    import jax

    from lmjax.models.gpt import GPT

    template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    tokenizer = CharTokenizer.train(["<>/ abcdefghijklmnopqrstuvwxyz?"])
    tokenizer.chat_template = template  # what an imported Hugging Face tokenizer carries
    model = GPT(gpt_config(vocab_size=tokenizer.vocab_size, block_size=BLOCK, num_layers=1))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32)))
    generator = Generator(model, jax.tree.map(lambda x: x * 8, params["params"]), tokenizer)
    messages = [{"role": "user", "content": "who is he?"}]
    fmt = ChatFormat(hf=HFChat(template))
    assert fmt.turn_end == "</s>"
    with serve_in_thread(create_app(generator, model_name="hf", max_slots=2)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="hf", messages=messages, max_tokens=20,
                                           temperature=0)
        info = httpx.get(f"{base}/tokenizer_info").json()
    assert info["chat_template"] == template
    text = "<user>who is he?</s><assistant>"
    assert fmt.render(messages) == text
    assert r.choices[0].message.content == _alone(generator, text, 20, ("</s>",)).text
