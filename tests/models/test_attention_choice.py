"""Which attention runs: cuDNN's fused kernel where it is known to work, XLA elsewhere, and the
reason said."""

import jax
import numpy as np
import pytest

from lmjax.models.bert import BertConfig
from lmjax.models.gpt import GPT, GPTConfig
from lmjax.models.layers import resolve_attention

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite


def _gpt(**kw):
    return GPTConfig(**{"vocab_size": 64, "d_model": 256, "num_heads": 4, "dtype": "bfloat16",
                        **kw})


@pytest.mark.parametrize("kw, platform, impl, reason", [
    ({}, "gpu", "cudnn", ""),
    ({"attention": "cudnn"}, "gpu", "cudnn", ""),
    ({}, "cpu", "xla", "the backend is cpu"),
    ({"attention": "cudnn"}, "tpu", "xla", "not an NVIDIA GPU"),
    ({"dtype": "float32"}, "gpu", "xla", "cuDNN needs bfloat16 or float16"),
    ({"num_heads": 1}, "gpu", "xla", "head_dim=256"),
    ({"d_model": 132, "num_heads": 11}, "gpu", "xla", "head_dim=12"),
    ({"attention": "xla"}, "gpu", "xla", ""),
])
def test_gpt_attention_choice(kw, platform, impl, reason):
    got, why = resolve_attention(_gpt(**kw), platform)
    assert got == impl and reason in why


def test_bert_keeps_xla_unless_asked():
    cfg = BertConfig(vocab_size=64, d_model=256, num_heads=4, dtype="bfloat16")
    assert resolve_attention(cfg, "gpu")[0] == "xla"
    assert resolve_attention(cfg.replace(attention="cudnn"), "gpu")[0] == "cudnn"


def test_asking_for_cudnn_on_this_cpu_runs_the_same_function_as_xla():
    """On a machine without cuDNN the fallback is taken and computes what XLA computes."""
    tokens = np.arange(16, dtype=np.int32).reshape(2, 8) % 64
    asked = GPT(_gpt(attention="cudnn", dtype="float32", d_model=32, num_heads=2))
    plain = GPT(_gpt(attention="xla", dtype="float32", d_model=32, num_heads=2))
    params = plain.init(jax.random.PRNGKey(0), tokens)
    np.testing.assert_allclose(asked.apply(params, tokens), plain.apply(params, tokens),
                               rtol=1e-6, atol=1e-6)
