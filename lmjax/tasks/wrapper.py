"""Training switches that change how any task trains, not what it is: a wrapper around a task.

A config section turns each on (see `WRAPPERS` in lmjax/tasks/__init__.py): ensembles,
distillation, adversarial training, DP-SGD. A wrapper overrides only what it changes (the loss,
the batches, the gradient function, the optimizer) and hands everything else to the task it
wraps, so the one trainer, evaluation and checkpointing serve it unchanged and wrappers stack.
"""

from __future__ import annotations

from typing import Callable

import jax

from lmjax.tasks.base import Task


class TaskWrapper(Task):
    """Forwards the whole `Task` interface, and any other attribute, to `self.inner`."""

    def __init__(self, inner: Task):  # noqa: D107 (no Task.__init__: the inner task has it all)
        self.inner = inner

    def __getattr__(self, name):  # attributes a task defines beyond the interface
        if name == "inner":  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    # The interface: every method of base.Task, handed to the inner task.
    def init_variables(self, rng: jax.Array) -> dict:
        return self.inner.init_variables(rng)

    def loss(self, params, model_state, batch: dict, rng: jax.Array):
        return self.inner.loss(params, model_state, batch, rng)

    def eval_outputs(self, params, model_state, batch: dict) -> dict:
        return self.inner.eval_outputs(params, model_state, batch)

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        return self.inner.train_batch(step, process_index, process_count)

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        return self.inner.eval_batches(batch_size, max_examples, split)

    def run_assets(self):
        return self.inner.run_assets()

    def example_arrays(self, split: str = "train") -> dict:
        return self.inner.example_arrays(split)

    def num_examples(self, split: str = "train") -> int:
        return self.inner.num_examples(split)

    def gather(self, arrays: dict, ids) -> dict:
        return self.inner.gather(arrays, ids)

    def labels(self, split: str = "train"):
        return self.inner.labels(split)

    def example_groups(self):
        return self.inner.example_groups()

    def plain_model(self, params) -> tuple:
        return self.inner.plain_model(params)

    def extra_metrics(self, step: int) -> dict:
        return self.inner.extra_metrics(step)

    def may_be_best(self, step: int) -> bool:
        return self.inner.may_be_best(step)

    def summarize(self, sums: dict, examples: dict) -> dict:
        return self.inner.summarize(sums, examples)

    def describe(self) -> str:
        return self.inner.describe()

    def samples(self, params, model_state) -> list[str]:
        return self.inner.samples(params, model_state)

    def end_of_training(self, params, model_state) -> tuple[dict, list[str]]:
        return self.inner.end_of_training(params, model_state)

    def load_pretrained(self, params, pretrained):
        return self.inner.load_pretrained(params, pretrained)

    def value_and_grad(self) -> Callable:
        # The inner task's own gradient function (a wrapper's loss is differentiated by
        # base.Task's default, since it overrides `loss`, not this).
        if type(self).loss is not TaskWrapper.loss:
            return jax.value_and_grad(self.loss, has_aux=True)
        return self.inner.value_and_grad()

    def wrap_optimizer(self, tx):
        return self.inner.wrap_optimizer(tx)

    # Class attributes of base.Task that a task may override: read from the inner task.
    matrix_dims = property(lambda self: self.inner.matrix_dims)
    trainable = property(lambda self: self.inner.trainable)
    splits = property(lambda self: self.inner.splits)
    tokens_per_example = property(lambda self: self.inner.tokens_per_example)
    tokenizer = property(lambda self: self.inner.tokenizer)
    capabilities = property(lambda self: self.inner.capabilities)
    class_names = property(lambda self: self.inner.class_names)
    seq_len = property(lambda self: self.inner.seq_len)
    members = property(lambda self: self.inner.members)
    model_config = property(lambda self: self.inner.model_config)
    cfg = property(lambda self: self.inner.cfg)
    assets = property(lambda self: self.inner.assets)
    log = property(lambda self: self.inner.log)
    model = property(lambda self: self.inner.model)
