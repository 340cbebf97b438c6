"""What the trainer needs from a model family: a model, its loss, and its data.

A new family (BERT, a CNN, ...) adds a class here with the same methods; the loop stays the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax.data import batches
from lmjax.data.prepare import prepare
from lmjax.models import gpt


def model_config(cfg: ml_collections.ConfigDict, vocab_size: int) -> ml_collections.FrozenConfigDict:
    """The model section with the vocabulary filled in and dtypes resolved (hashable, frozen)."""
    m = cfg.model.to_dict()
    if m["vocab_size"] == 0:
        m["vocab_size"] = vocab_size
    elif m["vocab_size"] < vocab_size:
        raise ValueError(f"model.vocab_size={m['vocab_size']} is smaller than the tokenizer's "
                         f"vocabulary ({vocab_size}): set it to 0 or at least {vocab_size}.")
    m["dtype"], m["param_dtype"] = jnp.dtype(m["dtype"]), jnp.dtype(m["param_dtype"])
    m["attention"] = None if m["attention"] == "auto" else m["attention"]
    return ml_collections.FrozenConfigDict(m)


class LanguageModelTask:
    """Next-token prediction with a GPT on a prepared text corpus."""

    def __init__(self, cfg: ml_collections.ConfigDict, log=print):
        self.cfg = cfg
        self.data = prepare(cfg.data, log=log)
        self.tokenizer = self.data.tokenizer
        self.model = gpt.GPT(model_config(cfg, self.tokenizer.vocab_size))
        self.matrix_dims = gpt.matrix_dims  # the weight matrices, for optim.name='muon'
        self.seq_len = cfg.model.block_size

    def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        x = np.zeros((batch_size, self.seq_len), np.int32)
        return {"inputs": x, "targets": x}

    def init_params(self, rng: jax.Array):
        return self.model.init(rng, self.dummy_batch()["inputs"])["params"]

    def loss(self, params, batch, rng) -> tuple[jax.Array, dict]:
        logits = self.model.apply({"params": params}, batch["inputs"], deterministic=False,
                                  rngs={"dropout": rng})
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch["targets"])
        return losses.mean(), {}

    def eval_sums(self, params, batch) -> dict[str, jax.Array]:
        """Sums over the batch, so that many batches (and devices) add up to exact totals."""
        logits = self.model.apply({"params": params}, batch["inputs"], deterministic=True)
        logits = logits.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = logits.argmax(-1) == batch["targets"]
        w = jnp.broadcast_to(batch["weights"][:, None], losses.shape)  # 0 for padding rows
        return {"loss": (losses * w).sum(), "accuracy": (correct * w).sum(), "count": w.sum()}

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        return batches.train_batch(self.data.train, self.cfg.seed, step, self.cfg.train.batch_size,
                                   self.seq_len, process_index, process_count)

    def eval_batches(self, max_windows: int, batch_size: int):
        """Fixed validation batches (the same every time); the last is padded with weight-0 rows."""
        starts = batches.eval_starts(len(self.data.val), self.seq_len, max_windows)
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            weights = np.zeros(batch_size, np.float32)
            weights[:len(chunk)] = 1.0
            batch = batches.windows(self.data.val, np.resize(chunk, batch_size), self.seq_len)
            yield {**batch, "weights": weights}


TASKS = {"lm": LanguageModelTask}


def make_task(cfg: ml_collections.ConfigDict, log=print):
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is not one of {', '.join(TASKS)}.")
    return TASKS[cfg.task](cfg, log=log)
