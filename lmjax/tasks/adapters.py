"""LoRA as a training switch (`lora.rank` > 0): the task's model gets low-rank adapters beside
the projections named in `lora.targets` (lmjax/models/lora.py, through qwix), its base frozen.

Any task whose model has those projections can take it: SFT of a GPT, a BERT text classifier.
Only the adapters train, and the task's fresh head (`Task.head_modules`, e.g. a classifier's).
Inference sees the plain model with the adapters folded into its kernels (`plain_model`), so
generating, serving, exporting and converting need nothing LoRA-specific.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax.config import require
from lmjax.models import lora
from lmjax.tasks.wrapper import TaskWrapper

SECTION = "lora"
STATE_DEFINING = {"lora.rank": 0, "lora.targets": None}  # adapters in the parameters


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.rank = 0                     # > 0: freeze the model, train rank-r adapters (+ a fresh head)
    c.alpha = 16.0                 # adapter output scaled by alpha / rank
    c.targets = "out,fc,proj"      # among qkv (GPT), query,key,value (BERT), out, fc, proj
    return c


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return cfg.lora.rank > 0


def check(cfg: ml_collections.ConfigDict) -> None:
    c = cfg.lora
    require(c.rank >= 0, f"lora.rank={c.rank}: 0 (no adapters) or a positive rank.")
    require(c.alpha > 0, f"lora.alpha={c.alpha}: must be positive.")
    targets = [t.strip() for t in str(c.targets).split(",") if t.strip()]
    bad = [t for t in targets if t not in lora.TARGETS]
    require(not bad and (targets or c.rank == 0), f"lora.targets={c.targets!r}: choose among "
            f"{', '.join(lora.TARGETS)} (comma-separated, e.g. 'query,value').")


def _adapters_apart(params) -> tuple[dict, dict]:
    """(the base parameters, the adapters by path): LoRA's factors taken out of the tree."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    adapters = {jax.tree_util.keystr(p): x for p, x in flat if lora.is_adapter(p)}

    def strip(tree):
        if not isinstance(tree, dict):
            return tree
        return {k: strip(v) for k, v in tree.items()
                if not k.endswith((lora.SUFFIX_A, lora.SUFFIX_B))}

    return strip(params), adapters


class AdaptedTask(TaskWrapper):
    def __init__(self, inner, cfg: ml_collections.ConfigDict):
        super().__init__(inner)
        self.section = cfg.lora
        self.base_model = inner.model
        # The inner task applies `model` in its loss and evaluation: it now applies the adapted
        # twin (same parameters plus the adapters).
        inner.model = lora.apply_lora(inner.model, self.section.rank, self.section.alpha,
                                      self.section.targets)
        self.trainable = functools.partial(lora.trainable_mask, heads=inner.head_modules)

    trainable = None  # set per instance (the base class reads the inner task's)

    @property
    def model_config(self):
        return self.base_model.cfg

    def plain_model(self, params) -> tuple:
        return self.base_model, lora.merged(jax.device_get(params), self.section)

    def load_pretrained(self, params, pretrained):
        """The inner task's choice of pretrained weights for the base; adapters start fresh."""
        base, adapters = _adapters_apart(params)
        loaded = self.inner.load_pretrained(base, pretrained)

        def put_back(path, mine):
            key = jax.tree_util.keystr(path)
            return adapters[key] if key in adapters else _at(loaded, path)

        return jax.tree_util.tree_map_with_path(put_back, params)

    def describe(self) -> str:
        params = nn.meta.unbox(jax.eval_shape(self.init_variables, jax.random.PRNGKey(0)))
        params = params["params"]
        return (f"{self.inner.describe()}; LoRA rank {self.section.rank} on "
                f"{self.section.targets}: {lora.count(params, self.trainable(params)):,} of "
                f"{lora.count(params):,} parameters train")

    def end_of_training(self, params, model_state) -> tuple[dict, list[str]]:
        """The inner task's end of training on the plain model with the adapters merged (SFT's
        answers are decoded from what inference will serve); then a check that the merged
        model gives the adapted model's outputs."""
        params = jax.tree.map(jnp.asarray, jax.device_get(params))  # qwix: jax.Arrays only
        base, merged = self.plain_model(params)
        adapted, self.inner.model = self.inner.model, base
        try:
            metrics, texts = self.inner.end_of_training(merged, model_state)
        finally:
            self.inner.model = adapted
        n = min(8, self.num_examples("val"))
        inputs = self.examples("val", np.arange(n))["inputs"]
        diff = float(np.abs(np.asarray(base.apply({"params": merged}, inputs), np.float32) -
                            np.asarray(self.model.apply({"params": params}, inputs),
                                       np.float32)).max())
        line = (f"LoRA adapters merged into the base weights (lmjax.models.lora.merge): the "
                f"merged model's outputs on {n} validation examples differ from the adapted "
                f"model's by at most {diff:.2e}.")
        return {**metrics, "lora_merge_max_diff": diff}, texts + [line]


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def wrap(task, cfg, assets=None, log=print, mesh=None):
    return AdaptedTask(task, cfg)
