"""The tiny character GPT the server tests share (random weights, scaled up so that its
predictions are peaked and differ from prompt to prompt), and the OpenAI-API server most of
them talk to (a module may define its own `generator` and `url`)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.models.generator import Generator
from lmjax.models.gpt import GPT
from lmjax.serve.app import create_app
from lmjax.serve.local import serve_in_thread

CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.:\n"


@pytest.fixture(scope="session")
def tiny_generator(gpt_config):
    """`tiny_generator(block_size, num_layers=1, seed=0, chars=CHARS, max_batch=8)`."""
    def make(block_size: int, num_layers: int = 1, seed: int = 0, chars: str = CHARS,
             max_batch: int = 8) -> Generator:
        tokenizer = CharTokenizer.train([chars])
        model = GPT(gpt_config(vocab_size=tokenizer.vocab_size, block_size=block_size,
                               num_layers=num_layers, d_model=16, mlp_ratio=2))
        params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(seed),
                                                   jnp.zeros((1, 4), jnp.int32)))
        params = jax.tree.map(lambda x: x * 8, params["params"])
        return Generator(model, params, tokenizer, max_batch=max_batch)

    return make


@pytest.fixture(scope="module")
def generator(tiny_generator):
    return tiny_generator(32)


@pytest.fixture(scope="module")
def url(generator):
    """A real server (uvicorn on 127.0.0.1) for `generator`, its model named 'tiny'."""
    app = create_app(generator, source="tiny test model", model_name="tiny", max_slots=4)
    with serve_in_thread(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    """The official `openai` client of `url`."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
