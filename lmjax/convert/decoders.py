"""Hugging Face Llama 3, Qwen 2/3, Mistral and Gemma 2/3 <-> lmjax's decoder (exact both ways).

Import reads config.json into a `DecoderConfig` (refusing, by name, every architecture and
setting the decoder would not reproduce exactly, before any weight is read), checks every
tensor's name and shape from the safetensors headers, then streams the weights: each tensor is
read in chunks of rows straight into its place in the parameter tree (transposed, in the
parameter dtype) and placed on its devices, so the conversion holds the parameters and at most
one chunk besides. Export streams the other way: one tensor at a time into model.safetensors,
with a config.json transformers reads back to the same function.

Keys a config.json may hold: those each family reads (below), bookkeeping (ids, dtype,
versions, generation defaults), and unknown ones only when unset (null, false, 0): an unknown
setting that is on is refused, since lmjax cannot know what it would change.
"""

from __future__ import annotations

import json
import math
import os

import flax.linen as nn
import jax
import numpy as np

from lmjax.convert import safetensors_io
from lmjax.convert.gpt2 import ConversionError
from lmjax.models.decoder import GLOBAL, LOCAL, Decoder, DecoderConfig

# Hugging Face class -> (lmjax family, its model_type).
ARCHITECTURES = {"LlamaForCausalLM": ("llama", "llama"), "Qwen2ForCausalLM": ("qwen2", "qwen2"),
                 "Qwen3ForCausalLM": ("qwen3", "qwen3"),
                 "MistralForCausalLM": ("mistral", "mistral"),
                 "Gemma2ForCausalLM": ("gemma2", "gemma2"),
                 "Gemma3ForCausalLM": ("gemma3", "gemma3_text")}
CLASSES = {family: cls for cls, (family, _) in ARCHITECTURES.items()}
MODEL_TYPES = {family: model_type for family, model_type in ARCHITECTURES.values()}

# transformers' class defaults (5.x), for keys a config.json leaves out.
_COMMON = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "num_key_value_heads": None,
           "head_dim": None}
DEFAULTS = {
    "llama": {**_COMMON, "tie_word_embeddings": False, "hidden_act": "silu", "mlp_bias": False,
              "attention_bias": False, "max_position_embeddings": 2048},
    "qwen2": {**_COMMON, "tie_word_embeddings": False, "hidden_act": "silu",
              "num_key_value_heads": 32, "max_position_embeddings": 32768,
              "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28},
    "qwen3": {**_COMMON, "tie_word_embeddings": False, "hidden_act": "silu", "head_dim": 128,
              "num_key_value_heads": 32, "attention_bias": False,
              "max_position_embeddings": 32768, "use_sliding_window": False,
              "sliding_window": 4096, "max_window_layers": 28},
    "mistral": {**_COMMON, "tie_word_embeddings": False, "hidden_act": "silu",
                "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "sliding_window": 4096},
    "gemma2": {**_COMMON, "tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh",
               "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
               "attention_bias": False, "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "gemma3": {**_COMMON, "tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh",
               "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
               "attention_bias": False, "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "rope_theta": 1e6, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
               "final_logit_softcapping": None, "attn_logit_softcapping": None},
}
# Keys every family reads (shape, rope, layer kinds) besides its DEFAULTS.
READ = {"architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
        "num_hidden_layers", "num_attention_heads", "rope_parameters", "rope_scaling",
        "layer_types"}
# Keys that do not change the function.
BOOKKEEPING = {
    "transformers_version", "torch_dtype", "dtype", "use_cache", "bos_token_id", "eos_token_id",
    "pad_token_id", "initializer_range", "_name_or_path", "id2label", "label2id", "return_dict",
    "output_hidden_states", "output_attentions", "tokenizer_class", "cache_implementation",
    "attention_dropout", "pretraining_tp", "hidden_act", "max_length", "min_length",
    "num_beams", "temperature", "top_k", "top_p", "repetition_penalty", "length_penalty",
    "num_return_sequences", "typical_p", "transformers.js_config", "_attn_implementation",
    "chunk_size_feed_forward", "is_encoder_decoder", "problem_type",
    "_sliding_window_pattern"}  # Gemma 3: derived from layer_types
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_new": "gelu_tanh", "gelu": "gelu"}
ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
             "original_max_position_embeddings", "beta_fast", "beta_slow", "attention_factor",
             "truncate", "partial_rotary_factor"}


def is_decoder(hf: dict) -> bool:
    """Whether a config.json is one of the decoder families (else GPT-2 or BERT)."""
    return bool(set(hf.get("architectures") or []) & set(ARCHITECTURES)) or hf.get(
        "model_type") in MODEL_TYPES.values()


def read_settings(directory: str) -> dict:
    """model_settings of a model directory's config.json (nothing else is read)."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise ConversionError(f"{directory} has no config.json (save the model with "
                              "save_pretrained).")
    with open(path) as f:
        return model_settings(json.load(f))


def model_settings(hf: dict) -> dict:
    """The lmjax `model` section (DecoderConfig fields) for a Hugging Face config.json; refuses
    whatever the decoder would not reproduce exactly, naming it."""
    archs = hf.get("architectures") or []
    if len(archs) != 1 or archs[0] not in ARCHITECTURES:
        raise ConversionError(f"architectures={archs!r}: lmjax converts "
                              f"{', '.join(ARCHITECTURES)} (and GPT2LMHeadModel, BERT).")
    family, model_type = ARCHITECTURES[archs[0]]
    if hf.get("model_type") != model_type:
        raise ConversionError(f"model_type={hf.get('model_type')!r}: {archs[0]} has "
                              f"model_type {model_type!r}.")
    defaults = DEFAULTS[family]
    unknown = [k for k, v in hf.items() if v not in (None, False, 0, 0.0, [], {}) and
               k not in READ | BOOKKEEPING | set(defaults)]
    if unknown:
        raise ConversionError(f"{archs[0]}: {unknown[0]}={hf[unknown[0]]!r} is a setting lmjax "
                              "does not reproduce (it converts the settings transformers' own "
                              "class reads).")
    get = lambda key: hf[key] if key in hf else defaults.get(key)  # noqa: E731
    heads = hf["num_attention_heads"]
    head_dim = get("head_dim") or hf["hidden_size"] // heads
    act_key = "hidden_activation" if family.startswith("gemma") else "hidden_act"
    if get(act_key) not in ACTIVATIONS:
        raise ConversionError(f"{act_key}={get(act_key)!r}: lmjax's gated MLP takes "
                              f"{', '.join(ACTIVATIONS)}.")
    if hf.get("use_bidirectional_attention"):
        raise ConversionError("use_bidirectional_attention=True: lmjax's decoder is causal.")
    gemma = family.startswith("gemma")
    bias = bool(get("attention_bias"))
    out = {
        "name": family, "vocab_size": hf["vocab_size"], "num_layers": hf["num_hidden_layers"],
        "num_heads": heads, "num_kv_heads": get("num_key_value_heads") or heads,
        "head_dim": head_dim, "d_model": hf["hidden_size"], "mlp_dim": hf["intermediate_size"],
        "activation": ACTIVATIONS[get(act_key)], "norm_eps": float(get("rms_norm_eps")),
        "norm_plus_one": gemma, "embed_scale": gemma, "post_norms": gemma,
        "qkv_bias": family == "qwen2" or bias, "out_bias": bias,
        "mlp_bias": bool(get("mlp_bias")) if family == "llama" else False,
        "qk_norm": family in ("qwen3", "gemma3"),
        "tie_embeddings": bool(get("tie_word_embeddings")),
        "attn_scalar": float(get("query_pre_attn_scalar")) if gemma else 0.0,
        "attn_softcap": float(get("attn_logit_softcapping") or 0.0),
        "final_softcap": float(get("final_logit_softcapping") or 0.0),
        "context_limit": int(get("max_position_embeddings")),
    }
    if family == "gemma3" and out["attn_softcap"]:
        raise ConversionError("attn_logit_softcapping: transformers' Gemma3 ignores it, so "
                              "lmjax will not guess; set it to null.")
    out.update(_layer_kinds(hf, family, get))
    out.update(_rope(hf, family, get, head_dim))
    return out


def _layer_kinds(hf: dict, family: str, get) -> dict:
    """layer_pattern and sliding_window: from layer_types when given, else the family's rule."""
    n = hf["num_hidden_layers"]
    window = get("sliding_window") or 0
    if family in ("qwen2", "qwen3") and not get("use_sliding_window"):
        window = 0  # Qwen's window applies only with use_sliding_window
    types = hf.get("layer_types")
    if types is not None:
        bad = sorted(set(types) - {"full_attention", "sliding_attention"})
        if bad or len(types) != n or family in ("llama", "mistral"):
            raise ConversionError(f"layer_types={types!r}: lmjax converts full_attention and "
                                  "sliding_attention layers, one per layer (Llama and Mistral "
                                  "have none).")
        local = [t == "sliding_attention" for t in types]
    elif family == "llama" or not window:
        local = [False] * n
    elif family == "mistral":
        local = [True] * n
    elif family in ("qwen2", "qwen3"):
        local = [i >= get("max_window_layers") for i in range(n)]
    elif family == "gemma2":
        local = [i % 2 == 0 for i in range(n)]
    else:
        pattern = get("sliding_window_pattern")
        local = [(i + 1) % pattern != 0 for i in range(n)]
    if any(local) and not window:
        raise ConversionError(f"layer_types has sliding_attention layers but sliding_window="
                              f"{hf.get('sliding_window')!r} (use_sliding_window="
                              f"{hf.get('use_sliding_window')!r}): transformers would not slide.")
    pattern = "".join(LOCAL if x else GLOBAL for x in local)
    period = next(p for p in range(1, n + 1)
                  if all(pattern[i] == pattern[i % p] for i in range(n)))
    return {"layer_pattern": pattern[:period], "sliding_window": window if any(local) else 0}


def _rope_dict(params: dict | None, where: str) -> dict:
    params = dict(params or {})
    kind = params.get("rope_type", params.get("type", "default"))
    unknown = sorted(set(params) - ROPE_KEYS)
    if unknown or kind not in ("default", "linear", "llama3", "yarn"):
        extra = f" with {', '.join(unknown)}" if unknown else ""
        raise ConversionError(f"{where}: rope_type={kind!r}{extra}: lmjax reproduces the "
                              "default, linear, llama3 and yarn RoPE (without mscale).")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConversionError(f"{where}: partial_rotary_factor={params['partial_rotary_factor']}"
                              ": transformers' classes for these families rotate whole heads.")
    return params


def _rope(hf: dict, family: str, get, head_dim: int) -> dict:
    """The rope_* fields, from rope_parameters (transformers 5) or rope_theta + rope_scaling."""
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        _rope_dict({"partial_rotary_factor": hf["partial_rotary_factor"]}, "config.json")
    params = hf.get("rope_parameters")
    local = None
    if params and family == "gemma3" and "full_attention" in params:
        local = _rope_dict(params.get("sliding_attention"), "rope_parameters.sliding_attention")
        glob = _rope_dict(params["full_attention"], "rope_parameters.full_attention")
    elif params:
        glob = _rope_dict(params, "rope_parameters")
    else:
        glob = _rope_dict(hf.get("rope_scaling"), "rope_scaling")
        glob.setdefault("rope_theta", get("rope_theta"))
        if family == "gemma3":
            local = {"rope_type": "default", "rope_theta": get("rope_local_base_freq")}
    glob.setdefault("rope_theta", get("rope_theta"))
    kind = glob.get("rope_type", glob.get("type", "default"))
    out = {"rope_theta": float(glob["rope_theta"]), "rope_type": kind,
           "rope_factor": float(glob.get("factor", 1.0))}
    if kind == "llama3":
        out.update(rope_low_freq_factor=float(glob["low_freq_factor"]),
                   rope_high_freq_factor=float(glob["high_freq_factor"]),
                   rope_original_context=int(glob["original_max_position_embeddings"]))
    if kind == "yarn":
        out.update(rope_original_context=int(glob.get("original_max_position_embeddings") or
                                             get("max_position_embeddings")),
                   rope_beta_fast=float(glob.get("beta_fast") or 32.0),
                   rope_beta_slow=float(glob.get("beta_slow") or 1.0),
                   rope_attention_factor=float(glob.get("attention_factor") or 0.0),
                   rope_truncate=bool(glob.get("truncate", True)))
    if local is not None:
        if local.get("rope_type", local.get("type", "default")) != "default":
            raise ConversionError("rope_parameters.sliding_attention: lmjax's local layers use "
                                  "the default RoPE (their own theta, unscaled).")
        out["rope_local_theta"] = float(local.get("rope_theta") or get("rope_local_base_freq"))
    return out


# -- tensors --------------------------------------------------------------------------------

def tensor_table(cfg: DecoderConfig) -> dict[str, tuple[tuple[str, ...], str]]:
    """Hugging Face tensor name -> (lmjax parameter path in the per-layer layout, how it maps):
    'linear' (HF (out, in) <-> a Flax kernel (in..., out...)), 'reshape' (a bias split into
    heads) or 'copy'."""
    t = {"model.embed_tokens.weight": (("embed", "embedding"), "copy"),
         "model.norm.weight": (("final_norm", "scale"), "copy")}
    if not cfg.tie_embeddings:
        t["lm_head.weight"] = (("lm_head", "kernel"), "linear")
    norms = {"input_layernorm": "attn_norm"}
    norms.update({"post_attention_layernorm": "attn_post_norm",
                  "pre_feedforward_layernorm": "mlp_norm",
                  "post_feedforward_layernorm": "mlp_post_norm"} if cfg.post_norms else
                 {"post_attention_layernorm": "mlp_norm"})
    for i in range(cfg.num_layers):
        p, b = f"model.layers.{i}.", f"block_{i}"
        for hf, ours, bias in (("q", "q", cfg.qkv_bias), ("k", "k", cfg.qkv_bias),
                               ("v", "v", cfg.qkv_bias), ("o", "o", cfg.out_bias)):
            t[f"{p}self_attn.{hf}_proj.weight"] = ((b, "attn", ours, "kernel"), "linear")
            if bias:
                t[f"{p}self_attn.{hf}_proj.bias"] = ((b, "attn", ours, "bias"), "reshape")
        if cfg.qk_norm:
            for n in ("q_norm", "k_norm"):
                t[f"{p}self_attn.{n}.weight"] = ((b, "attn", n, "scale"), "copy")
        for n in ("gate", "up", "down"):
            t[f"{p}mlp.{n}_proj.weight"] = ((b, "mlp", n, "kernel"), "linear")
            if cfg.mlp_bias:
                t[f"{p}mlp.{n}_proj.bias"] = ((b, "mlp", n, "bias"), "copy")
        for hf, ours in norms.items():
            t[f"{p}{hf}.weight"] = ((b, ours, "scale"), "copy")
    return t


def param_shapes(cfg: DecoderConfig) -> dict:
    """The parameter tree's shapes and dtypes (per-layer layout), without computing it."""
    unrolled = Decoder(cfg.replace(scan_layers=False))
    boxed = jax.eval_shape(unrolled.init, jax.random.PRNGKey(0), np.zeros((1, 1), np.int32))
    return nn.meta.unbox(boxed)["params"]


def _at(tree: dict, path: tuple[str, ...]):
    for k in path:
        tree = tree[k]
    return tree


def _hf_shape(shape: tuple[int, ...], how: str, n_in: int) -> tuple[int, ...]:
    if how == "linear":
        return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))
    return (math.prod(shape),) if how == "reshape" else tuple(shape)


def _inputs(path: tuple[str, ...]) -> int:
    """A kernel's input axes: two for the attention output (heads, head_dim), else one."""
    return 2 if path[-2] == "o" else 1


def check_tensors(ckpt: safetensors_io.Checkpoint, cfg: DecoderConfig) -> dict:
    """The table of what to read, after checking every name and shape in the headers:
    nothing missing, nothing unexpected (a tied model's copy of the output layer and old
    rotary buffers aside)."""
    table, shapes = tensor_table(cfg), param_shapes(cfg)
    names = set(ckpt.entries)
    skip = {n for n in names if n.endswith("rotary_emb.inv_freq")}
    if cfg.tie_embeddings:
        skip |= names & {"lm_head.weight"}
    missing, extra = sorted(set(table) - names), sorted(names - set(table) - skip)
    if missing or extra:
        raise ConversionError(f"the checkpoint does not hold this model: "
                              f"{'missing ' + ', '.join(missing[:4]) if missing else ''}"
                              f"{'; ' if missing and extra else ''}"
                              f"{'unexpected ' + ', '.join(extra[:4]) if extra else ''}.")
    for name, (path, how) in table.items():
        want = _hf_shape(_at(shapes, path).shape, how, _inputs(path))
        if ckpt.shape(name) != want:
            raise ConversionError(f"{name} is {ckpt.shape(name)}; config.json makes it {want}.")
    return table


def load_params(directory: str, cfg: DecoderConfig, shardings=None) -> dict:
    """The checkpoint's weights as lmjax parameters (the config's layout and parameter dtype),
    streamed: each leaf is filled chunk by chunk, then placed (on `shardings`' devices, a tree
    like the parameters', or the default device) before the next is read."""
    ckpt = safetensors_io.Checkpoint(directory)
    table = check_tensors(ckpt, cfg)
    shapes = param_shapes(cfg)
    leaves: dict = {}  # final path -> (shape of one layer's part, [(name, how, layer, inputs)])
    for name, (path, how) in table.items():
        final, layer = path, None
        if cfg.scan_layers and path[0].startswith("block_"):
            final, layer = ("blocks", "block", *path[1:]), int(path[0][len("block_"):])
        leaves.setdefault(final, (_at(shapes, path).shape, []))[1].append(
            (name, how, layer, _inputs(path)))
    params: dict = {}
    for final, (shape, parts) in leaves.items():
        stacked = parts[0][2] is not None
        buf = _aligned_empty(((cfg.num_layers,) if stacked else ()) + tuple(shape),
                             np.dtype(cfg.param_dtype))
        for name, how, layer, n_in in parts:
            _fill(ckpt, name, how, buf[layer] if stacked else buf, n_in)
        node = params
        for k in final[:-1]:
            node = node.setdefault(k, {})
        # On the CPU the device array is this very buffer; elsewhere the buffer is freed.
        node[final[-1]] = jax.device_put(buf, None if shardings is None else
                                         _at(shardings, final))
        del buf
    return params


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """np.empty on a 64-byte boundary, which JAX's CPU client takes as the device array itself
    (numpy's large arrays start 16 bytes past a page: device_put would copy each leaf)."""
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].view(dtype).reshape(shape)


TRANSPOSE_ROWS = 32


def _copy_transposed(src: np.ndarray, dst: np.ndarray) -> None:
    """dst[...] = src.T (2-D), TRANSPOSE_ROWS rows of `src` at a time, so that what is read and
    written stays in the cache: 3x faster than one transposed copy of 64 MB."""
    for i in range(0, len(src), TRANSPOSE_ROWS):
        dst[:, i:i + TRANSPOSE_ROWS] = src[i:i + TRANSPOSE_ROWS].T


def _fill(ckpt: safetensors_io.Checkpoint, name: str, how: str, out: np.ndarray,
          n_in: int) -> None:
    """Tensor `name` into `out` (its lmjax shape), a chunk of its rows at a time."""
    if how == "linear":  # HF rows are output features: columns of the (in, out) kernel
        view = out.reshape(math.prod(out.shape[:n_in]), -1)
        for start, stop in ckpt.row_chunks(name):
            _copy_transposed(ckpt.read(name, start, stop), view[:, start:stop])
    else:
        view = out.reshape(ckpt.shape(name))
        direct = view.ndim and view.dtype == safetensors_io.DTYPES[ckpt.dtype(name)]
        for start, stop in ckpt.row_chunks(name):
            if direct:  # from the file into its place
                ckpt.read(name, start, stop, out=view[start:stop])
            else:
                view[start:stop] = ckpt.read(name, start, stop)


# -- export ----------------------------------------------------------------------------------

def export_problems(cfg: DecoderConfig) -> list[str]:
    """What the family's Hugging Face class cannot express of this config (empty: exact)."""
    f, p = cfg.name, []
    gemma = f.startswith("gemma")
    want = {"norm_plus_one": gemma, "embed_scale": gemma, "post_norms": gemma,
            "qk_norm": f in ("qwen3", "gemma3")}
    p += [f"model.{k}={getattr(cfg, k)} ({CLASSES[f]} has {v})" for k, v in want.items()
          if getattr(cfg, k) != v]
    if f == "qwen2" and (not cfg.qkv_bias or cfg.out_bias):
        p.append("Qwen2 has q/k/v biases and no output bias (model.qkv_bias=True, "
                 "model.out_bias=False)")
    if f in ("llama", "qwen3") or gemma:
        if cfg.qkv_bias != cfg.out_bias:
            p.append(f"{CLASSES[f]} has one attention_bias for q, k, v and o")
    if f == "mistral" and (cfg.qkv_bias or cfg.out_bias):
        p.append("MistralForCausalLM has no attention biases")
    if cfg.mlp_bias and f != "llama":
        p.append(f"{CLASSES[f]} has no MLP biases")
    if (cfg.activation == "silu") == gemma:
        p.append(f"model.activation={cfg.activation!r} is not {CLASSES[f]}'s")
    if cfg.attn_scalar and not gemma:
        p.append(f"{CLASSES[f]} scales scores by head_dim (model.attn_scalar=0)")
    if cfg.attn_softcap and f != "gemma2" or cfg.final_softcap and not gemma:
        p.append(f"{CLASSES[f]} has no such soft-capping")
    pattern = set(cfg.local_layers)
    if f == "llama" and True in pattern or f == "mistral" and len(pattern) > 1:
        p.append(f"{CLASSES[f]} cannot hold this local/global pattern")
    if cfg.rope_local_theta and f != "gemma3" or cfg.rotary_dim != cfg.head_dim:
        p.append("the rotary settings (rope_local_theta, rotary_dim) are not expressible")
    return p


def hf_config(cfg: DecoderConfig, tokenizer=None, dtype: str = "float32") -> dict:
    """A config.json transformers reads back to the same function (refuses what it cannot)."""
    problems = export_problems(cfg)
    if problems:
        raise ConversionError(f"model.name={cfg.name!r} cannot be written as {CLASSES[cfg.name]}"
                              f": {'; '.join(problems)}.")
    gemma = cfg.name.startswith("gemma")
    out = {"architectures": [CLASSES[cfg.name]], "model_type": MODEL_TYPES[cfg.name],
           "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
           "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
           "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
           "head_dim": cfg.head_dim, "rms_norm_eps": cfg.norm_eps,
           "max_position_embeddings": cfg.context_limit or cfg.block_size,
           "tie_word_embeddings": cfg.tie_embeddings, "rope_theta": cfg.rope_theta,
           "torch_dtype": dtype, "attention_dropout": 0.0, "use_cache": True}
    scaling = {"rope_type": cfg.rope_type, "factor": cfg.rope_factor}
    if cfg.rope_type == "llama3":
        scaling.update(low_freq_factor=cfg.rope_low_freq_factor,
                       high_freq_factor=cfg.rope_high_freq_factor,
                       original_max_position_embeddings=cfg.rope_original_context)
    if cfg.rope_type == "yarn":
        scaling.update(original_max_position_embeddings=cfg.rope_original_context,
                       beta_fast=cfg.rope_beta_fast, beta_slow=cfg.rope_beta_slow,
                       truncate=cfg.rope_truncate,
                       **({"attention_factor": cfg.rope_attention_factor}
                          if cfg.rope_attention_factor else {}))
    out["rope_scaling"] = None if cfg.rope_type == "default" else scaling
    act = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}[cfg.activation]
    out["hidden_activation" if gemma else "hidden_act"] = act
    if cfg.name in ("llama", "qwen3") or gemma:
        out["attention_bias"] = cfg.qkv_bias
    if cfg.name == "llama":
        out["mlp_bias"] = cfg.mlp_bias
    local = cfg.local_layers
    if cfg.name == "mistral":
        out["sliding_window"] = cfg.sliding_window or None
    elif cfg.name != "llama":
        out["layer_types"] = ["sliding_attention" if x else "full_attention" for x in local]
        out["sliding_window"] = cfg.sliding_window or None
    if cfg.name in ("qwen2", "qwen3"):
        out.update(use_sliding_window=any(local),
                   max_window_layers=local.index(True) if any(local) else cfg.num_layers)
    if gemma:
        scalar = cfg.attn_scalar or cfg.head_dim  # transformers 5 wants an int here
        out.update(query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,
                   final_logit_softcapping=cfg.final_softcap or None,
                   attn_logit_softcapping=cfg.attn_softcap or None)
    if cfg.name == "gemma3":
        out["rope_local_base_freq"] = cfg.rope_local_theta or cfg.rope_theta
    if tokenizer is not None:
        out.update(bos_token_id=getattr(tokenizer, "bos_id", None),
                   eos_token_id=getattr(tokenizer, "eot_id", None),
                   pad_token_id=getattr(tokenizer, "pad_id", None))
    return out


def write_hf(out: str, params: dict, cfg: DecoderConfig, tokenizer=None,
             dtype: str | None = None) -> None:
    """A directory transformers' AutoModelForCausalLM.from_pretrained(out) loads: config.json,
    model.safetensors (written a tensor at a time from the per-layer `params`, in `dtype`,
    default the parameters'), and the tokenizer with its settings."""
    dtype = dtype or str(np.dtype(cfg.param_dtype))
    config = hf_config(cfg, tokenizer, dtype)  # refuses before writing anything
    names = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
    if dtype not in names:
        raise ConversionError(f"dtype={dtype!r}: write float32, bfloat16 or float16.")
    np_dtype = np.dtype(safetensors_io.DTYPES[names[dtype]])
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for name, (path, how) in tensor_table(cfg).items():
        leaf = _at(params, path)
        tensors[name] = (_hf_shape(leaf.shape, how, _inputs(path)), np_dtype,
                         lambda leaf=leaf, how=how, n=_inputs(path): _to_hf(leaf, how, n))
    safetensors_io.write(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if tokenizer is not None:
        tokenizer.save(out)


def _to_hf(leaf, how: str, n_in: int) -> np.ndarray:
    x = np.asarray(leaf)
    if how == "linear":
        x = x.reshape(math.prod(x.shape[:n_in]), -1)
        out = np.empty(x.shape[::-1], x.dtype)
        _copy_transposed(x, out)
        return out
    return x.reshape(-1) if how == "reshape" else x
