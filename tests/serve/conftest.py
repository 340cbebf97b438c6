"""The tiny character GPT the server tests share (random weights, scaled up so that its
predictions are peaked and differ from prompt to prompt)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.models.generator import Generator
from lmjax.models.gpt import GPT

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
