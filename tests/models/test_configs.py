"""The typed model configs (GPTConfig, BertConfig, RNNConfig): built from the config files'
`model` sections, checked on construction with errors that name `model.<field>`, vocabulary
filled from the tokenizer, hashable, and round-tripped through plain dicts."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest

from lmjax.config import ConfigError
from lmjax.data.tokenizers import CharTokenizer
from lmjax.models.bert import BertConfig, MaskedLM
from lmjax.models.generator import Generator, Request
from lmjax.models.gpt import GPTConfig
from lmjax.models.layers import resolve_attention
from lmjax.models.rnn import RNNConfig, RNNLM

FAMILIES = [(GPTConfig, "gpt.py"), (BertConfig, "bert.py"), (RNNConfig, "lstm.py")]


@pytest.mark.parametrize("cls,config_file", FAMILIES)
def test_built_from_the_config_files_model_section(load_config, cls, config_file):
    section = load_config("tiny", config_file).model
    cfg = cls.from_section(section)
    assert type(cfg) is cls
    # Every field of the section arrives unchanged (dtype names as the same names).
    assert {k: v for k, v in cfg.to_dict().items() if k in section} == section.to_dict()
    assert cfg.vocab_size == 0  # left to the tokenizer
    assert cfg.block_size == 32 and cfg.d_model == 32


def test_the_files_presets_resolve_dtypes_and_attention(load_config):
    gpt = GPTConfig.from_section(load_config("tiny").model)
    assert (gpt.num_layers, gpt.num_heads, gpt.d_model) == (2, 2, 32)
    assert gpt.dtype == jnp.float32 and gpt.param_dtype == jnp.float32
    assert gpt.attention == "auto" and gpt.attention_impl == "xla"  # the tests run on CPU
    big = GPTConfig.from_section(load_config("gpt2_124m").model)
    assert (big.num_layers, big.num_heads, big.d_model, big.block_size) == (12, 12, 768, 1024)
    assert big.dtype == jnp.bfloat16 and big.param_dtype == jnp.float32 and big.scan_layers
    assert GPTConfig.from_section(load_config("tiny").model, attention="xla").attention_impl == \
        "xla"
    bert = BertConfig.from_section(load_config("tiny", "bert.py").model)
    assert (bert.num_layers, bert.pooling, bert.num_classes, bert.dropout) == (2, "cls", 0, 0.1)
    lstm = load_config("tiny", "lstm.py")
    assert RNNConfig.from_section(lstm.model).name == "lstm"
    lstm.model.name = "gru"
    assert RNNConfig.from_section(lstm.model).name == "gru"


def test_auto_attention_takes_cudnn_only_where_it_runs():
    gpt = GPTConfig(d_model=64, num_heads=4, dtype="bfloat16")  # head_dim 16
    assert resolve_attention(gpt, "gpu") == ("cudnn", "")
    for cfg, platform, why in [
            (gpt, "cpu", "not an NVIDIA GPU"),
            (gpt.replace(dtype="float32"), "gpu", "model.dtype=float32"),
            (gpt.replace(d_model=48, num_heads=4), "gpu", "head_dim=12"),
            # BERT's masked attention: XLA unless asked for cuDNN.
            (BertConfig(d_model=64, num_heads=4, dtype="bfloat16"), "gpu", "model.attention")]:
        impl, reason = resolve_attention(cfg, platform)
        assert impl == "xla" and why in reason, (cfg, platform)
    assert resolve_attention(BertConfig(d_model=64, num_heads=4, dtype="bfloat16",
                                        attention="cudnn"), "gpu") == ("cudnn", "")
    assert resolve_attention(gpt.replace(attention="xla"), "gpu") == ("xla", "")
    assert resolve_attention(gpt.replace(attention="cudnn"), "cpu")[0] == "xla"  # falls back


def test_overrides_win_over_the_section_and_name_selects_the_family(load_config):
    section = load_config("tiny").model
    cfg = GPTConfig.from_section(section, vocab_size=65, d_model=64)
    assert (cfg.vocab_size, cfg.d_model, cfg.num_layers) == (65, 64, 2)
    assert section.d_model == 32  # the section itself is untouched
    # `model.name` picks the family (lmjax/tasks/lm.py); it is not a GPT field.
    assert GPTConfig.from_section({**section.to_dict(), "name": "gpt"}) == \
        GPTConfig.from_section(section)


@pytest.mark.parametrize("cls,fields,field", [
    (GPTConfig, dict(d_model=30, num_heads=4), "model.d_model"),
    (GPTConfig, dict(remat="some"), "model.remat"),
    (GPTConfig, dict(dropout=1.5), "model.dropout"),
    (GPTConfig, dict(dropout=-0.1), "model.dropout"),
    (GPTConfig, dict(num_layers=0), "model.num_layers"),
    (GPTConfig, dict(vocab_size=-1), "model.vocab_size"),
    (GPTConfig, dict(dtype="int8"), "model.dtype"),
    (GPTConfig, dict(param_dtype="float64x"), "model.param_dtype"),
    (GPTConfig, dict(attention="flash"), "model.attention"),
    (BertConfig, dict(d_model=30, num_heads=4), "model.d_model"),
    (BertConfig, dict(pooling="max"), "model.pooling"),
    (BertConfig, dict(dropout=1.5), "model.dropout"),
    (BertConfig, dict(attention="flash"), "model.attention"),
    (RNNConfig, dict(name="transformer"), "model.name"),
    (RNNConfig, dict(d_model=0), "model.d_model"),
    (RNNConfig, dict(dropout=1.0), "model.dropout"),
])
def test_a_bad_value_is_an_error_naming_its_field(cls, fields, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        cls(**fields)


@pytest.mark.parametrize("cls,config_file", FAMILIES)
def test_a_bad_value_in_the_config_file_is_caught_by_from_section(load_config, cls,
                                                                  config_file):
    """What `--config.model.<field>=...` would give: the error names the field."""
    c = load_config("tiny", config_file)
    c.model.dropout = 1.5
    with pytest.raises(ConfigError, match=r"model\.dropout=1\.5"):
        cls.from_section(c.model)
    assert issubclass(ConfigError, ValueError)  # the commands print it as one line


@pytest.mark.parametrize("cls,config_file", FAMILIES)
def test_an_unknown_field_is_an_error_naming_it(load_config, cls, config_file):
    section = load_config("tiny", config_file).model.to_dict()
    with pytest.raises(ConfigError, match=r"model\.d_modle is not a field of " + cls.__name__):
        cls.from_section({**section, "d_modle": 64})
    with pytest.raises(ConfigError, match=r"model\.heads"):
        cls.from_section(section, heads=4)


@pytest.mark.parametrize("cls", [GPTConfig, BertConfig, RNNConfig])
def test_with_vocab_fills_keeps_or_refuses(cls):
    filled = cls(vocab_size=0).with_vocab(84)
    assert filled.vocab_size == 84 and filled == cls(vocab_size=84)
    # A vocabulary padded beyond the tokenizer's (e.g. 50304 for GPT-2's 50257) is kept.
    padded = cls(vocab_size=128)
    assert padded.with_vocab(84) == padded and padded.with_vocab(128) == padded
    with pytest.raises(ConfigError, match=r"model\.vocab_size=64 is smaller than the "
                       r"tokenizer's vocabulary \(84\)"):
        cls(vocab_size=64).with_vocab(84)


@pytest.mark.parametrize("cls", [GPTConfig, BertConfig, RNNConfig])
def test_configs_are_frozen_and_hashable(cls):
    a, b = cls(vocab_size=100, d_model=64), cls(vocab_size=100, d_model=64)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, cls(vocab_size=101, d_model=64)}) == 2  # usable as dict keys, jit statics
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.d_model = 128
    changed = a.replace(d_model=128)
    assert changed.d_model == 128 and a.d_model == 64 and type(changed) is cls
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        a.replace(dropout=2.0)  # replace checks like construction


def test_dtype_names_and_dtype_objects_give_equal_configs():
    by_name = GPTConfig(dtype="bfloat16", param_dtype="float32")
    by_object = GPTConfig(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    assert by_name == by_object and hash(by_name) == hash(by_object)
    assert by_name.dtype == jnp.dtype(jnp.bfloat16)


@pytest.mark.parametrize("cfg", [
    GPTConfig(vocab_size=65, dtype="bfloat16", scan_layers=True, remat="dots",
              attention="xla"),
    BertConfig(vocab_size=512, pooling="mean", num_classes=4, dtype="float16"),
    RNNConfig(name="gru", vocab_size=65, num_layers=2, dropout=0.2),
], ids=["gpt", "bert", "rnn"])
def test_to_dict_round_trips(cfg):
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-ready: dtypes as their names
    if hasattr(cfg, "dtype"):
        assert d["dtype"] == str(cfg.dtype) and isinstance(d["dtype"], str)
    assert type(cfg)(**d) == cfg
    assert type(cfg).from_section(d) == cfg
    assert set(d) == {f.name for f in dataclasses.fields(cfg)}


@pytest.mark.slow  # RNN decoding keeps a fast test in tests/infer/test_generate.py
def test_the_generator_takes_an_lstm_and_refuses_an_encoder(bert_config):
    """Language models decode (tests/infer/test_generate.py checks an RNN's tokens); a BERT
    has no decoding cache, and the error says what it is."""
    tokenizer = CharTokenizer.train(["abcdefgh \n"])
    model = RNNLM(RNNConfig(vocab_size=tokenizer.vocab_size, d_model=8, block_size=16))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    out = Generator(model, params, tokenizer).generate([Request("ab", 5)])[0]
    assert len(out.tokens) == 5 and out.finish_reason == "length"
    with pytest.raises(ValueError, match="decodes language models") as e:
        Generator(MaskedLM(bert_config()), {}, tokenizer)
    assert "a Bert model" in str(e.value)
