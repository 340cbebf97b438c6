"""Checks on a resolved config, so that mistakes fail at start-up with the field's name."""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    pass


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(c: ml_collections.ConfigDict) -> None:
    t, m = c.train, c.model
    _require(t.num_steps > 0, f"train.num_steps={t.num_steps}: must be a positive number of steps.")
    _require(t.batch_size > 0, f"train.batch_size={t.batch_size}: must be positive.")
    _require(t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
             f"train.grad_accum={t.grad_accum}: must be positive and divide "
             f"train.batch_size={t.batch_size}.")
    for name in ("log_every", "eval_every"):
        _require(t[name] > 0, f"train.{name}={t[name]}: must be positive.")
    _require(t.eval_windows >= 0 and t.final_eval_windows >= 0,
             "train.eval_windows and train.final_eval_windows must be >= 0 (0: the whole split).")
    _require(c.checkpoint.every > 0, f"checkpoint.every={c.checkpoint.every}: must be positive.")
    _require(c.checkpoint.keep > 0, f"checkpoint.keep={c.checkpoint.keep}: must be positive.")
    for name in ("block_size", "num_layers", "num_heads", "d_model", "mlp_ratio"):
        _require(m[name] > 0, f"model.{name}={m[name]}: must be positive.")
    _require(m.d_model % m.num_heads == 0,
             f"model.d_model={m.d_model} must be divisible by model.num_heads={m.num_heads}.")
    _require(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout}: must be in [0, 1).")
    _require(m.vocab_size >= 0, f"model.vocab_size={m.vocab_size}: 0 (from the tokenizer) or more.")
    for name in ("dtype", "param_dtype"):
        _require(m[name] in ("float32", "bfloat16", "float16"),
                 f"model.{name}={m[name]!r}: use 'float32', 'bfloat16' or 'float16'.")
    _require(m.attention in ("auto", "xla", "cudnn"),
             f"model.attention={m.attention!r}: use 'auto', 'xla' or 'cudnn'.")
    _require(c.data.tokenizer in ("char", "bpe", "wordpiece"),
             f"data.tokenizer={c.data.tokenizer!r}: use 'char', 'bpe' or 'wordpiece'.")
    _require(c.data.tokenizer != "wordpiece" or c.data.vocab_size >= 64,
             f"data.vocab_size={c.data.vocab_size}: WordPiece needs at least 64 (try 4096).")
    _require(c.data.tokenizer != "bpe" or c.data.vocab_size >= 256 + 1,
             f"data.vocab_size={c.data.vocab_size}: byte-level BPE needs at least 257.")
    _require(0.0 < c.data.val_fraction < 1.0,
             f"data.val_fraction={c.data.val_fraction}: must be between 0 and 1.")
    _require(c.sample.num_samples >= 0 and c.sample.max_new_tokens >= 0,
             "sample.num_samples and sample.max_new_tokens must be >= 0.")
    _require(c.sample.temperature >= 0, f"sample.temperature={c.sample.temperature}: must be >= 0.")
