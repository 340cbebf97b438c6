"""What preference and reinforcement fine-tuning share (task=dpo, task=grpo): a policy (a GPT
or a decoder family's model) that starts from a run (init_from, as SFT does), its
log-probabilities, and its frozen reference.

The reference is the model before this run's first step:
- with LoRA (`lora.rank > 0`), the same parameters with the adapters off: the plain GPT applied
  to the adapted tree ignores the adapters, so no second copy of the weights exists;
- otherwise, a copy kept in the run's model state (`model_state['reference']`), taken from the
  parameters at the first step (after init_from replaced them) and checkpointed with the run,
  so a resumed run keeps the same reference.
It never receives gradients (stop_gradient), and a config that needs none (GRPO with
`rl.beta=0`) keeps no copy.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from lmjax import rundir
from lmjax.models import lora
from lmjax.tasks.lm import chunked_losses
from lmjax.tasks.sft import SFTTask

REFERENCE = "reference"  # the model-state collection holding the reference's parameters


def token_logps(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) at every position, float32 (batch, length): differentiable in `logits`."""
    return -optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                            targets)


def has_adapters(params) -> bool:
    return any(lora.is_adapter(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


class PolicyTask(SFTTask):
    """SFT's model, tokenizer, template, pretrained weights and end-of-training answers, with a
    reference model. Subclasses set `uses_reference(cfg)` and write the data and the loss."""

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        # The GPT without adapters: the LoRA switch replaces `self.model` by the adapted twin
        # after this; the reference and the decoder apply this one.
        self.plain = self.model

    def uses_reference(self) -> bool:
        return True

    def init_variables(self, rng: jax.Array):
        variables = super().init_variables(rng)
        if self.uses_reference() and not has_adapters(nn.meta.unbox(variables["params"])):
            variables = {**variables, REFERENCE: {"params": variables["params"],
                                                  "ready": jnp.zeros((), bool)}}
        return variables

    def reference_params(self, params, model_state):
        """The reference's parameters, for `self.plain` (see the module docstring)."""
        ref = model_state.get(REFERENCE)
        if ref is None:  # LoRA: the plain model reads the base weights, not the adapters
            return jax.lax.stop_gradient(params)
        return jax.lax.stop_gradient(jax.lax.cond(ref["ready"], lambda: ref["params"],
                                                  lambda: params))

    def with_reference(self, model_state, params) -> dict:
        """The model state after a training step: the reference fixed at the first one."""
        if REFERENCE not in model_state:
            return model_state
        return {**model_state, REFERENCE: {"params": self.reference_params(params, model_state),
                                           "ready": jnp.ones((), bool)}}

    def logps(self, model, params, inputs, targets, segment_ids, last: int = 0) -> jax.Array:
        """log p(target) at each position (rows, length) under `model`, or at the last `last`
        positions only (the others' logits are never formed); the output layer in pieces of
        train.loss_chunk positions when it is set (lmjax/tasks/lm.py: chunked_losses)."""
        # qwix finds kernels only among jax.Arrays (a restored checkpoint holds NumPy arrays).
        params = jax.tree.map(jnp.asarray, params)
        kwargs = dict(deterministic=True, segment_ids=segment_ids)
        if not last and not self.loss_chunk:
            return token_logps(model.apply({"params": params}, inputs, **kwargs), targets)
        hidden = model.apply({"params": params}, inputs, hidden=True, **kwargs)
        if last:
            hidden, targets = hidden[:, -last:], targets[:, -last:]
        head = functools.partial(self.head_logits, params)  # the family's (SFTTask)
        if self.loss_chunk:
            return -chunked_losses(hidden, targets, head, self.loss_chunk)
        return token_logps(head(hidden), targets)
