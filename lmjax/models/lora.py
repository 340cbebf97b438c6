"""LoRA through qwix: low-rank adapters beside chosen projections, frozen base, merge for inference.

`qwix.apply_lora_to_model` wraps a Linen model so that every matched module's kernel `W` gets
`kernel_lora_a` (fan-in x rank, he-uniform) and `kernel_lora_b` (rank x fan-out, zeros) beside
it, and computes `x W + (x A B) * alpha / rank`. The wrapped model is still a Linen module
(same init/apply, the factors carry logical axis names derived from the kernel's), so the
trainer, sharding and checkpoints need nothing new. What qwix does not give us, and this file
does: which parameters train (the adapters and the fresh task head), and folding the adapters
back into plain kernels so the unwrapped model serves the merged weights.

Trap (qwix 0.1.8): qwix finds a module's kernel among its parameters that are jax.Arrays. Under
jit they all are; applied eagerly to NumPy parameters (jax.device_get of a checkpoint), the
adapters are silently skipped. Convert with jax.tree.map(jnp.asarray, params) first.
"""

from __future__ import annotations

import re
import warnings

import flax.linen as nn
import jax
import numpy as np

# Projections that can take adapters (names of their Dense modules): BERT's query/key/value,
# GPT's fused qkv, both models' attention output (out) and MLP (fc, proj); the decoder
# family's (Llama, Qwen, Mistral, Gemma) q, k, v, o and gated MLP (gate, up, down).
TARGETS = ("query", "key", "value", "qkv", "out", "fc", "proj", "q", "k", "v", "o", "gate",
           "up", "down")
SUFFIX_A, SUFFIX_B = "_lora_a", "_lora_b"

# qwix 0.1.8 checks for flax's removed nnx.VariableState alias on every traced matmul.
warnings.filterwarnings("ignore", message="'VariableState' was removed",
                        category=DeprecationWarning)


def apply_lora(model: nn.Module, rank: int, alpha: float, targets) -> nn.Module:
    """`model` with rank-`rank` adapters on the modules named in `targets` (any depth)."""
    import qwix

    targets = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets)
               if t.strip()]
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"lora targets {bad or targets!r}: choose among {', '.join(TARGETS)} "
                         "(comma-separated, e.g. 'query,value').")
    if rank <= 0:
        raise ValueError(f"lora rank={rank}: must be a positive number.")
    rule = qwix.LoraRule(module_path=f".*/({'|'.join(map(re.escape, targets))})",
                         rank=rank, alpha=float(alpha))
    return qwix.apply_lora_to_model(model, qwix.LoraProvider([rule]))


def _keys(path) -> list[str]:
    return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def is_adapter(path) -> bool:
    return _keys(path)[-1].endswith((SUFFIX_A, SUFFIX_B))


def trainable_mask(params, heads=("pooler", "classifier")):
    """True for the adapters and for every parameter under a top-level module in `heads` (the
    freshly initialised task head must learn); False for the frozen base."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: is_adapter(p) or _keys(p)[0] in heads, params)


def count(params, mask=None) -> int:
    """Number of parameters, or of those where `mask` is True."""
    leaves = jax.tree.leaves(nn.meta.unbox(params))
    flags = jax.tree.leaves(mask) if mask is not None else [True] * len(leaves)
    return sum(int(np.prod(x.shape)) for x, keep in zip(leaves, flags) if keep)


def merged(params, lora_cfg):
    """The parameters a run trained with the `lora` config section serves with: adapters
    folded into the kernels when it has them (rank > 0), else `params` unchanged."""
    if lora_cfg is None or lora_cfg.rank <= 0:
        return params
    return merge(params, lora_cfg.rank, lora_cfg.alpha)


def merge(params, rank: int, alpha: float):
    """Plain parameters for the un-adapted model: W + (A @ B) * alpha / rank, adapters removed.

    qwix flattens A to (prod(input axes), rank) and B to (rank, prod(output axes)) in the
    kernel's own axis order, so their product reshapes onto the kernel exactly.
    """
    scale = alpha / rank

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        out = {k: walk(v) for k, v in tree.items()
               if not k.endswith((SUFFIX_A, SUFFIX_B))}
        for name in list(out):
            a, b = tree.get(name + SUFFIX_A), tree.get(name + SUFFIX_B)
            if a is not None and b is not None:
                w = out[name]
                out[name] = (w + (a @ b).reshape(w.shape).astype(w.dtype) * scale).astype(w.dtype)
        return out

    return walk(params)
