"""What the model families share: the typed-config base class and the sharded dense layer.

Every family's config is a frozen dataclass next to its module (`GPTConfig`, `BertConfig`,
`RNNConfig`). It is built from the config file's `model` section with `from_section`, checks
itself on construction with messages that name the `model.<field>` to change, and is hashable,
so Flax modules can hold it as an attribute.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import require

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the typed model configs: construction from a config section, checks, dicts."""

    # Section fields that select or describe the family rather than configure it.
    IGNORED = ("name",)

    @classmethod
    def from_section(cls, section, **overrides) -> "ModelConfig":
        """From the `model` section of a config (a ConfigDict or a dict); `overrides` win.
        A field the section has but this family does not is an error naming it."""
        values = dict(section.to_dict() if hasattr(section, "to_dict") else section)
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - set(cls.IGNORED))
        require(not unknown, f"model.{unknown[0] if unknown else ''} is not a field of "
                f"{cls.__name__}; it has {', '.join(sorted(known))}.")
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        """JSON-ready: dtypes as their names."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        """The vocabulary filled in from the tokenizer (model.vocab_size=0), or checked
        against it."""
        if self.vocab_size == 0:
            return self.replace(vocab_size=vocab_size)
        require(self.vocab_size >= vocab_size,
                f"model.vocab_size={self.vocab_size} is smaller than the tokenizer's vocabulary "
                f"({vocab_size}): set it to 0 or at least {vocab_size}.")
        return self

    def _check_positive(self, *names: str) -> None:
        for name in names:
            require(getattr(self, name) > 0, f"model.{name}={getattr(self, name)}: must be "
                    "positive.")

    def _check_dropout(self) -> None:
        require(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout}: must be in [0, 1).")

    def _set_dtypes(self) -> None:
        """Accepts dtype names or objects; stores jnp dtypes (hashable, usable by Flax)."""
        for name in ("dtype", "param_dtype"):
            value = getattr(self, name)
            require(str(jnp.dtype(value)) in DTYPES if _is_dtype(value) else False,
                    f"model.{name}={value!r}: use 'float32', 'bfloat16' or 'float16'.")
            object.__setattr__(self, name, jnp.dtype(value))

    def _check_attention(self) -> None:
        require(self.attention in ("auto", "xla", "cudnn"),
                f"model.attention={self.attention!r}: use 'auto', 'xla' or 'cudnn'.")

    # Whether 'auto' may pick cuDNN's fused attention (causal, unmasked: the GPT's case).
    AUTO_CUDNN = False

    @property
    def attention_impl(self) -> str:
        """`jax.nn.dot_product_attention`'s implementation on this process's backend."""
        return resolve_attention(self)[0]


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """The fields and checks the GPT and BERT configs share."""
    vocab_size: int = 0            # 0 until the tokenizer fills it in (with_vocab)
    block_size: int = 128          # context length (BERT: incl. [CLS] and [SEP])
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0
    use_bias: bool = True
    dtype: Any = "float32"         # compute dtype
    param_dtype: Any = "float32"
    attention: str = "auto"        # 'auto' | 'xla' | 'cudnn' (see resolve_attention)

    def __post_init__(self):
        self._check_positive("block_size", "num_layers", "num_heads", "d_model", "mlp_ratio")
        require(self.d_model % self.num_heads == 0, f"model.d_model={self.d_model} must be "
                f"divisible by model.num_heads={self.num_heads}.")
        require(self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}: 0 (from the "
                "tokenizer) or more.")
        self._check_dropout()
        self._set_dtypes()
        self._check_attention()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


def resolve_attention(cfg, platform: str | None = None) -> tuple[str, str]:
    """('cudnn' or 'xla', why not cuDNN) for `cfg.attention` on `platform` (default: JAX's).

    JAX's own default (implementation=None) is XLA's attention everywhere; cuDNN's fused
    flash attention is about twice as fast on NVIDIA GPUs, but takes only some shapes and
    dtypes and raises on others. So 'auto' takes cuDNN where it is known to work (GPT on a GPU,
    16-bit, head_dim a multiple of 8 up to 128) and XLA elsewhere; 'cudnn' asked for where it
    cannot run falls back to XLA; both say why.
    """
    if cfg.attention == "xla":
        return "xla", ""
    platform = platform or jax.default_backend()
    head_dim = cfg.head_dim
    problems = []
    if platform not in ("gpu", "cuda"):
        problems.append(f"the backend is {platform}, not an NVIDIA GPU")
    if jnp.dtype(cfg.dtype) not in (jnp.bfloat16, jnp.float16):
        problems.append(f"model.dtype={jnp.dtype(cfg.dtype)} (cuDNN needs bfloat16 or float16)")
    if head_dim > 128 or head_dim % 8:
        problems.append(f"head_dim={head_dim} (cuDNN needs a multiple of 8 up to 128)")
    if cfg.attention == "auto" and not cfg.AUTO_CUDNN:
        problems.append("this model's masked attention is left to XLA unless "
                        "model.attention='cudnn'")
    if problems:
        return "xla", f"XLA attention: {'; '.join(problems)}."
    return "cudnn", ""


def _is_dtype(value: Any) -> bool:
    try:
        jnp.dtype(value)
        return True
    except TypeError:
        return False


def _plain(value: Any) -> Any:
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def dense(features: int | Sequence[int], axes: tuple, cfg, name: str, std: float = 0.02,
          use_bias: bool | None = None, inputs: int = 1) -> nn.DenseGeneral:
    """A dense layer over the last `inputs` axes whose kernel and bias carry logical axis names
    (the kernel's are `axes`, the bias's the output ones), in the config's dtypes; with a bias
    when `use_bias` (default: the config's)."""
    return nn.DenseGeneral(
        features, axis=tuple(range(-inputs, 0)), dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        use_bias=cfg.use_bias if use_bias is None else use_bias,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[inputs:]), name=name)
