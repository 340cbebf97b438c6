"""Llama 3, Qwen 2/3, Mistral and Gemma 2/3 from and to Hugging Face, checked against
transformers' own PyTorch models with random weights built offline (`hf_decoder` in
tests/conftest.py: tiny widths; each family's real widths, `real_widths`, in the slow tier).

Per family, at tiny and at real widths: fp32 logits within 1e-4 on two 128-token sequences
(longer than the windows, with enough layers for local and global ones), greedy decoding
through the KV cache equal to `model.generate` for 32 tokens, and the import -> export round
trip exact."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from lmjax.convert import decoders, safetensors_io  # noqa: E402
from lmjax.convert.gpt2 import ConversionError  # noqa: E402
from lmjax.models.decoder import FAMILIES, Decoder, DecoderConfig  # noqa: E402
from lmjax.models.generator import Generator, Request  # noqa: E402

LENGTH = 128


def _import(directory, block_size=LENGTH, **fields) -> tuple[DecoderConfig, dict]:
    with open(f"{directory}/config.json") as f:
        settings = decoders.model_settings(json.load(f))
    cfg = DecoderConfig(**{**settings, "block_size": block_size, **fields})
    return cfg, decoders.load_params(str(directory), cfg)


def _hf_logits(model, tokens, last: int = 0):
    """transformers' fp32 logits (of the `last` positions only, if given)."""
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens)), logits_to_keep=last).logits.numpy()


def _tokens(vocab, batch=2, length=LENGTH, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length))


class Ids:
    """Text <-> ids as space-separated numbers: the same ids into both models."""

    def encode(self, text):
        return np.asarray([int(x) for x in text.split()], np.int32)

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)


def greedy_equal(model, cfg, params, hf, vocab, new=32, lengths=(23, 9)):
    """Prompts of `lengths` (left-padded into one batch) greedily continued by lmjax's decoder
    and by transformers' generate."""
    prompts = [_tokens(vocab, 1, n, seed=n)[0] for n in lengths]
    gen = Generator(model, params, Ids())
    ours = gen.generate([Request(" ".join(map(str, p)), max_new_tokens=new) for p in prompts])
    hf.generation_config.eos_token_id = None  # as Ids has none: both decode `new` tokens
    for p, row in zip(prompts, ours):
        with torch.no_grad():
            want = hf.generate(torch.as_tensor(p[None]), max_new_tokens=new, do_sample=False,
                               pad_token_id=0)[0, len(p):].tolist()
        assert row.tokens == want


# Real widths: each family's released shape (HUB below) with few layers: 2; Mistral 7B's 1
# (for time: its layers are all of one kind), Gemma 3's 6 so that its five local layers and a
# global one appear. Real vocabularies (up to 262,144) and MLP widths. Windows of 32
# instead of 4,096 / 512 (Mistral, Gemma 2 / 3), so that the 128-token sequences and the
# decoding (a 23-token prompt and 32 new tokens) pass them.
REAL = {"llama": ("llama3_2_1b", 2), "qwen2": ("qwen2_5_0_5b", 2), "qwen3": ("qwen3_0_6b", 2),
        "mistral": ("mistral_7b_v0_1", 1), "gemma2": ("gemma2_2b", 2), "gemma3": ("gemma3_1b", 6)}
REAL_WINDOW = 32


def real_widths(family: str) -> dict:
    """hf_decoder's keywords for the family's real widths: vocabulary, hidden size, heads, key
    and value heads, head_dim, MLP width, RoPE (Llama 3.2's llama3 scaling), biases, q/k norms
    and soft-caps as released."""
    name, layers = REAL[family]
    hub = {k: v for k, v in HUB[name].items() if k not in (
        "architectures", "model_type", "torch_dtype", "bos_token_id", "eos_token_id")}
    hub["num_hidden_layers"] = layers
    # the fixture's head_dim (16) would stand where a config.json leaves it to the class
    hub.setdefault("head_dim", hub["hidden_size"] // hub["num_attention_heads"])
    if family in ("mistral", "gemma2", "gemma3"):
        hub["sliding_window"] = REAL_WINDOW
    return hub


# The fast tier checks Gemma 3 at the tiny width (the most features); the full suite every
# family at both widths.
@pytest.mark.parametrize("family,width", [
    pytest.param(f, w, marks=() if (f, w) == ("gemma3", "tiny") else pytest.mark.slow)
    for w in ("tiny", "real") for f in FAMILIES])
def test_each_family_matches_transformers(tmp_path, hf_decoder, family, width):
    """Logits, greedy decoding, and the import -> export round trip, for one family."""
    hf = hf_decoder(family, tmp_path / "hf", **(real_widths(family) if width == "real" else {}))
    cfg, params = _import(tmp_path / "hf")
    if cfg.sliding_window:  # windows shorter than the sequences; local and global layers
        assert cfg.sliding_window < LENGTH and len(set(cfg.local_layers)) == (
            1 if family == "mistral" else 2)
    tokens = _tokens(cfg.vocab_size)
    theirs = _hf_logits(hf, tokens)
    ours = np.asarray(jax.jit(Decoder(cfg).apply)({"params": params}, jnp.asarray(tokens)))
    assert np.abs(theirs).max() > 3  # a real test: logits far from zero
    assert np.abs(ours - theirs).max() <= 1e-4
    del theirs

    # At real widths one prompt: decoding reads every weight per token (the tiny width tests
    # the left-padded batch).
    greedy_equal(Decoder(cfg), cfg, params, hf, cfg.vocab_size,
                 lengths=(23,) if width == "real" else (23, 9))
    del hf  # one model in memory at a time

    decoders.write_hf(str(tmp_path / "out"), jax.device_get(params), cfg)
    a, b = (safetensors_io.Checkpoint(str(tmp_path / d)) for d in ("hf", "out"))
    assert set(a.entries) == set(b.entries)
    for name in a.entries:  # a chunk at a time: tensors of up to 2.4 GB
        assert a.dtype(name) == b.dtype(name) and a.shape(name) == b.shape(name)
        for start, stop in a.row_chunks(name):
            assert np.array_equal(a.read(name, start, stop), b.read(name, start, stop)), name
    # transformers reads the exported config.json to the same function: the last positions
    # are past the windows and attend to every layer kind
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert np.abs(_hf_logits(again, tokens, last=8) - ours[:, -8:]).max() <= 1e-4
    assert _import(tmp_path / "out")[0] == cfg


@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
def test_scanned_layers_and_sharded_checkpoints(tmp_path, hf_decoder, family, monkeypatch):
    """A checkpoint in several files (model.safetensors.index.json) into the scanned layout,
    read in chunks of 37 rows transposed 8 at a time (the edges of both)."""
    monkeypatch.setattr(safetensors_io, "CHUNK_BYTES", 37 * 64 * 4)
    monkeypatch.setattr(decoders, "TRANSPOSE_ROWS", 8)
    hf = hf_decoder(family, tmp_path / "hf")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / safetensors_io.INDEX).exists()
    cfg, params = _import(tmp_path / "sharded", scan_layers=True)
    assert params["blocks"]["block"]["mlp"]["up"]["kernel"].shape == (4, 64, 96)
    tokens = _tokens(97, batch=1)
    ours = np.asarray(Decoder(cfg).apply({"params": params}, jnp.asarray(tokens)))
    assert np.abs(_hf_logits(hf, tokens) - ours).max() <= 1e-4


def test_untied_embeddings_and_biases(tmp_path, hf_decoder):
    """Llama with an untied output layer and biases on every projection (attention_bias,
    mlp_bias), Qwen 3 with attention biases."""
    for family, extra in (("llama", dict(tie_word_embeddings=False, attention_bias=True,
                                         mlp_bias=True)),
                          ("qwen3", dict(attention_bias=True, tie_word_embeddings=True))):
        hf = hf_decoder(family, tmp_path / family, **extra)
        cfg, params = _import(tmp_path / family)
        assert cfg.out_bias and cfg.tie_embeddings == extra["tie_word_embeddings"]
        tokens = _tokens(97, batch=1)
        ours = np.asarray(Decoder(cfg).apply({"params": params}, jnp.asarray(tokens)))
        assert np.abs(_hf_logits(hf, tokens) - ours).max() <= 1e-4


def _config(tmp_path, **changes) -> str:
    """A directory whose config.json is a tiny Llama's with `changes`, and whose weights
    file is garbage: a refusal must come before any weight is read."""
    hf = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96,
                                  num_hidden_layers=2, num_attention_heads=4).to_dict()
    hf.update({"architectures": ["LlamaForCausalLM"], **changes})
    (tmp_path / "config.json").write_text(json.dumps(hf))
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    return str(tmp_path)


@pytest.mark.parametrize("changes,named", [
    (dict(architectures=["PhiForCausalLM"], model_type="phi"), "architectures=['PhiForCausalLM']"),
    (dict(architectures=["Gemma3ForConditionalGeneration"]), "Gemma3ForConditionalGeneration"),
    (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}),
     "rope_type='dynamic'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4, "mscale": 1.0,
                           "original_max_position_embeddings": 64}), "mscale"),
    (dict(hidden_act="relu"), "hidden_act='relu'"),
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor=0.5"),
    (dict(layer_types=["sliding_attention", "full_attention"]), "layer_types"),
])
def test_what_lmjax_cannot_reproduce_is_refused_by_name(tmp_path, changes, named):
    import re

    with pytest.raises(ConversionError, match=re.escape(named)):
        decoders.read_settings(_config(tmp_path, **changes))


def test_a_checkpoint_that_is_not_the_config_is_refused_by_tensor(tmp_path, hf_decoder):
    hf_decoder("qwen3", tmp_path)
    cfg, _ = _import(tmp_path)
    with pytest.raises(ConversionError, match="missing model.layers.4."):
        decoders.load_params(str(tmp_path), cfg.replace(num_layers=5))
    with pytest.raises(ConversionError, match="unexpected model.layers.0.self_attn.k_norm"):
        decoders.load_params(str(tmp_path), cfg.replace(qk_norm=False))
    with pytest.raises(ConversionError, match=r"layers.0.mlp.gate_proj.weight is \(96, 64\)"):
        decoders.load_params(str(tmp_path), cfg.replace(mlp_dim=80))


# Configs as the Hub's releases write them (older keys: rope_theta + rope_scaling,
# sliding_window_pattern, rope_local_base_freq), at their real sizes: what transformers makes
# of each must be what lmjax builds.
HUB = {
    "llama3_2_1b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
        "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
        "mlp_bias": False, "num_attention_heads": 32, "num_hidden_layers": 16,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "use_cache": True, "vocab_size": 128256},
    "qwen3_0_6b": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
        "max_position_embeddings": 40960, "max_window_layers": 28, "num_attention_heads": 16,
        "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
        "tie_word_embeddings": True, "use_sliding_window": False, "vocab_size": 151936},
    "qwen2_5_0_5b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
        "max_window_layers": 24, "num_attention_heads": 14, "num_hidden_layers": 24,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": True, "use_sliding_window": False,
        "use_mrope": False, "vocab_size": 151936},
    "mistral_7b": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "vocab_size": 32768},
    "mistral_7b_v0_1": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
        "tie_word_embeddings": False, "vocab_size": 32000},
    "gemma2_2b": {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "attn_logit_softcapping": 50.0, "cache_implementation": "hybrid",
        "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
        "intermediate_size": 9216, "max_position_embeddings": 8192, "num_attention_heads": 8,
        "num_hidden_layers": 26, "num_key_value_heads": 4, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
        "vocab_size": 256000},
    "gemma3_1b": {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "attn_logit_softcapping": None, "cache_implementation": "hybrid",
        "final_logit_softcapping": None, "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152,
        "intermediate_size": 6912, "max_position_embeddings": 32768, "num_attention_heads": 4,
        "num_hidden_layers": 26, "num_key_value_heads": 1, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": None,
        "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
        "vocab_size": 262144},
    "gemma3_4b_text": {  # the text tower's settings: global layers' RoPE scaled linearly
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "head_dim": 256,
        "hidden_size": 2560, "intermediate_size": 10240, "num_attention_heads": 8,
        "num_hidden_layers": 34, "num_key_value_heads": 4, "query_pre_attn_scalar": 256,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
        "vocab_size": 262208},
}


@pytest.mark.parametrize("name", HUB)
def test_hub_configs_mean_what_transformers_makes_of_them(name):
    hub = HUB[name]
    cfg = DecoderConfig(**decoders.model_settings(hub), block_size=512)
    theirs = transformers.AutoConfig.for_model(hub["model_type"], **{
        k: v for k, v in hub.items() if k != "model_type"})
    types = getattr(theirs, "layer_types", None) or (
        ["sliding_attention" if getattr(theirs, "sliding_window", None) else "full_attention"] *
        theirs.num_hidden_layers)
    assert [("sliding_attention" if x else "full_attention") for x in cfg.local_layers] == types
    assert cfg.sliding_window == (theirs.sliding_window if "sliding_attention" in types else 0)
    assert cfg.context_limit == theirs.max_position_embeddings
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.tie_embeddings) == (
        theirs.num_key_value_heads, getattr(theirs, "head_dim", None) or
        theirs.hidden_size // theirs.num_attention_heads, theirs.tie_word_embeddings)
    rope = theirs.rope_parameters
    glob = rope.get("full_attention", rope)
    assert (cfg.rope_type, cfg.rope_theta, cfg.rope_factor) == (
        glob["rope_type"], glob["rope_theta"], glob.get("factor", 1.0))
    if "sliding_attention" in rope:
        assert cfg.rope_local_theta == rope["sliding_attention"]["rope_theta"]
    assert cfg.attn_softcap == (getattr(theirs, "attn_logit_softcapping", None) or 0.0)
    assert cfg.final_softcap == (getattr(theirs, "final_logit_softcapping", None) or 0.0)


def test_family_defaults_are_transformers_class_defaults():
    """The defaults lmjax assumes for keys a config.json leaves out are transformers' own."""
    import inspect

    classes = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig,
               "gemma2": transformers.Gemma2Config, "gemma3": transformers.Gemma3TextConfig}
    for family, cls in classes.items():
        signature = inspect.signature(cls.__init__).parameters
        for key, value in decoders.DEFAULTS[family].items():
            if key in signature:
                assert signature[key].default == value, (family, key)
        rope = cls().rope_parameters  # rope_theta and Gemma 3's local base and pattern
        glob = rope.get("full_attention", rope)
        assert glob["rope_theta"] == decoders.DEFAULTS[family]["rope_theta"]
        if family == "gemma3":
            assert rope["sliding_attention"]["rope_theta"] == 10000.0
            assert cls().layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
