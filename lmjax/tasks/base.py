"""Defaults shared by every task, and the padding of evaluation batches."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np


class Task:
    """Base class: subclasses set `model` and implement the methods that raise here."""

    matrix_dims = None  # for optim.name='muon': which parameters are weight matrices
    trainable = None    # params -> tree of bools: only True leaves train (LoRA); None: all
    splits = ("val",)   # evaluation splits; a task with an official test split adds "test"

    def init_variables(self, rng):
        raise NotImplementedError

    def loss(self, params, model_state, batch, rng):
        raise NotImplementedError

    def eval_outputs(self, params, model_state, batch):
        raise NotImplementedError

    def summarize(self, sums: dict, examples: dict) -> dict:
        count = sums.pop("count")
        return {k: v / count for k, v in sums.items()}

    def describe(self) -> str:
        return ""

    def samples(self, params, model_state) -> list[str]:
        return []

    def load_pretrained(self, params, pretrained):
        """Starting parameters when config.init_from names another run (default: all of them)."""
        return pretrained


def padded_batches(num_examples: int, batch_size: int,
                   fetch: Callable[[np.ndarray], dict]) -> Iterator[dict]:
    """Fixed batches over examples 0..n-1; the last is padded by repeating rows with weight 0."""
    for i in range(0, num_examples, batch_size):
        idx = np.arange(i, min(i + batch_size, num_examples))
        weights = np.zeros(batch_size, np.float32)
        weights[:len(idx)] = 1.0
        yield {**fetch(np.resize(idx, batch_size)), "weights": weights}


def epoch_indices(seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
    """The example indices of one global batch: each epoch is a fresh permutation of the data,
    drawn from (seed, epoch), so the batch at any step is known without replaying the run."""
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training examples are fewer than one batch "
                         f"({batch_size}): lower train.batch_size.")
    per_epoch = num_examples // batch_size  # the remainder is dropped, differently each epoch
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[pos * batch_size:(pos + 1) * batch_size]


def local_rows(x: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    per_host = len(x) // process_count
    return x[process_index * per_host:(process_index + 1) * per_host]
