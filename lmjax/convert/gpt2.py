"""lmjax GPT <-> Hugging Face GPT-2 weights (safetensors), exact in both directions.

lmjax's GPT is GPT-2's architecture: pre-LayerNorm blocks (epsilon 1e-5), tanh-approximate
GELU, learned positions, tied input/output embeddings. GPT-2's Conv1D weights are stored
(inputs, outputs) like Flax kernels; only the head split differs: HF keeps q, k and v side by
side in one (d, 3d) matrix, lmjax as a (d, 3, heads, head_dim) kernel. A model without biases
(use_bias=False) becomes a GPT-2 with zero biases, which computes the same function.
"""

from __future__ import annotations

import json
import os

import numpy as np

# HF GPT-2 settings lmjax reproduces exactly; anything else is refused with its name.
REQUIRED = {"activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": True, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}


class ConversionError(ValueError):
    """A model that cannot be converted exactly; the message names the setting."""


def model_settings(hf: dict) -> dict:
    """The lmjax `model` config section for a HF GPT-2 config (refuses what would not match)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConversionError(f"model_type={hf.get('model_type')!r}: from_hf imports GPT-2 "
                              "checkpoints (BERT weights: lmjax.convert.bert.params_from_hf).")
    problems = [f"{k}={hf.get(k, v)!r} (lmjax needs {v!r})" for k, v in REQUIRED.items()
                if hf.get(k, v) != v]
    inner = hf.get("n_inner") or 4 * hf["n_embd"]
    if inner % hf["n_embd"]:
        problems.append(f"n_inner={inner} is not a multiple of n_embd={hf['n_embd']}")
    if problems:
        raise ConversionError("this Hugging Face model is not a GPT-2 lmjax can reproduce: "
                              + "; ".join(problems))
    return {"vocab_size": hf["vocab_size"], "block_size": hf["n_positions"],
            "num_layers": hf["n_layer"], "num_heads": hf["n_head"], "d_model": hf["n_embd"],
            "mlp_ratio": inner // hf["n_embd"], "use_bias": True}


def hf_config(model) -> dict:
    """A HF GPT2Config (as a dict) for an lmjax model config."""
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": model.vocab_size, "n_positions": model.block_size,
            "n_embd": model.d_model, "n_layer": model.num_layers, "n_head": model.num_heads,
            "n_inner": model.mlp_ratio * model.d_model, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attn_pdrop": 0.0, **REQUIRED}


def _strip(tensors: dict) -> dict:
    """GPT2LMHeadModel saves 'transformer.h.0...', GPT2Model (the hub's gpt2) 'h.0...'."""
    out = {}
    for k, v in tensors.items():
        k = k[len("transformer."):] if k.startswith("transformer.") else k
        if k.endswith((".attn.bias", ".attn.masked_bias")) or k == "lm_head.weight":
            continue  # causal-mask buffers; the head is the tied embedding
        out[k] = np.asarray(v, np.float32)
    return out


def params_from_hf(tensors: dict, model) -> dict:
    """lmjax parameters (per-layer layout, float32) from HF GPT-2 tensors."""
    t = _strip(tensors)
    d, h = model.d_model, model.num_heads
    params = {"wte": {"embedding": t.pop("wte.weight")}, "wpe": t.pop("wpe.weight"),
              "ln_f": {"scale": t.pop("ln_f.weight"), "bias": t.pop("ln_f.bias")}}
    for i in range(model.num_layers):
        p = f"h.{i}."
        params[f"block_{i}"] = {
            "ln1": {"scale": t.pop(p + "ln_1.weight"), "bias": t.pop(p + "ln_1.bias")},
            "ln2": {"scale": t.pop(p + "ln_2.weight"), "bias": t.pop(p + "ln_2.bias")},
            "attn": {
                "qkv": {"kernel": t.pop(p + "attn.c_attn.weight").reshape(d, 3, h, d // h),
                        "bias": t.pop(p + "attn.c_attn.bias").reshape(3, h, d // h)},
                "out": {"kernel": t.pop(p + "attn.c_proj.weight").reshape(h, d // h, d),
                        "bias": t.pop(p + "attn.c_proj.bias")}},
            "mlp": {"fc": {"kernel": t.pop(p + "mlp.c_fc.weight"),
                           "bias": t.pop(p + "mlp.c_fc.bias")},
                    "proj": {"kernel": t.pop(p + "mlp.c_proj.weight"),
                             "bias": t.pop(p + "mlp.c_proj.bias")}}}
    if t:
        raise ConversionError(f"unexpected tensors in the checkpoint: {sorted(t)[:5]}")
    if params["wpe"].shape[0] < model.block_size:
        raise ConversionError(f"the checkpoint has {params['wpe'].shape[0]} positions, fewer "
                              f"than model.block_size={model.block_size}")
    params["wpe"] = params["wpe"][:model.block_size]
    return params


def hf_from_params(params: dict, model) -> dict:
    """HF GPT2LMHeadModel tensors (float32 NumPy) from lmjax parameters (per-layer layout)."""
    d, ff = model.d_model, model.mlp_ratio * model.d_model
    zeros = np.zeros  # use_bias=False: GPT-2 with zero biases is the same function

    def get(tree, *keys, shape=None):
        for k in keys:
            if k not in tree:
                return zeros(shape, np.float32)
            tree = tree[k]
        return np.asarray(tree, np.float32)

    out = {"transformer.wte.weight": get(params, "wte", "embedding"),
           "transformer.wpe.weight": get(params, "wpe"),
           "transformer.ln_f.weight": get(params, "ln_f", "scale"),
           "transformer.ln_f.bias": get(params, "ln_f", "bias", shape=(d,))}
    for i in range(model.num_layers):
        b, p = params[f"block_{i}"], f"transformer.h.{i}."
        out.update({
            p + "ln_1.weight": get(b, "ln1", "scale"),
            p + "ln_1.bias": get(b, "ln1", "bias", shape=(d,)),
            p + "ln_2.weight": get(b, "ln2", "scale"),
            p + "ln_2.bias": get(b, "ln2", "bias", shape=(d,)),
            p + "attn.c_attn.weight": get(b, "attn", "qkv", "kernel").reshape(d, 3 * d),
            p + "attn.c_attn.bias": get(b, "attn", "qkv", "bias", shape=(3 * d,)).reshape(3 * d),
            p + "attn.c_proj.weight": get(b, "attn", "out", "kernel").reshape(d, d),
            p + "attn.c_proj.bias": get(b, "attn", "out", "bias", shape=(d,)),
            p + "mlp.c_fc.weight": get(b, "mlp", "fc", "kernel"),
            p + "mlp.c_fc.bias": get(b, "mlp", "fc", "bias", shape=(ff,)),
            p + "mlp.c_proj.weight": get(b, "mlp", "proj", "kernel"),
            p + "mlp.c_proj.bias": get(b, "mlp", "proj", "bias", shape=(d,))})
    return out


def resolve_source(source: str) -> str:
    """A local directory for `source`: itself, or a Hugging Face Hub model id (e.g. 'gpt2',
    'bert-base-uncased'; needs the internet) downloaded: config, weights and tokenizer files."""
    if os.path.isdir(source):
        return source
    try:
        from huggingface_hub import snapshot_download  # noqa: lazy (the hf extra; Hub ids only)
        return snapshot_download(source, allow_patterns=[
            "config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"])
    except Exception as e:
        raise ConversionError(f"{source!r} is not a local directory and could not be "
                              f"downloaded from the Hugging Face Hub ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}).") from None


def read_hf(source: str) -> tuple[dict, dict, str | None]:
    """(config, tensors, tokenizer.json path or None) from a local directory, or from the
    Hugging Face Hub when `source` is a model id (e.g. 'gpt2'; needs the internet)."""
    from safetensors.numpy import load_file

    source = resolve_source(source)
    files = sorted(f for f in os.listdir(source) if f.endswith(".safetensors"))
    if not files or not os.path.exists(os.path.join(source, "config.json")):
        raise ConversionError(f"{source} needs config.json and *.safetensors (save the model "
                              "with save_pretrained(..., safe_serialization=True)).")
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    tensors = {}
    for name in files:
        tensors.update(load_file(os.path.join(source, name)))
    tokenizer = os.path.join(source, "tokenizer.json")
    return config, tensors, tokenizer if os.path.exists(tokenizer) else None


def write_hf(out: str, params: dict, model, tokenizer=None) -> None:
    """A directory `transformers.GPT2LMHeadModel.from_pretrained(out)` loads."""
    from safetensors.numpy import save_file

    os.makedirs(out, exist_ok=True)
    save_file(hf_from_params(params, model), os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    config = hf_config(model)
    eot = getattr(tokenizer, "eot_id", None)  # None: no such token (GPT2Config says 50256)
    config.update(bos_token_id=eot, eos_token_id=eot)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if tokenizer is not None and getattr(tokenizer, "kind", "") == "bpe":
        tokenizer.save(out)  # a Hugging Face `tokenizers` file: PreTrainedTokenizerFast loads it
