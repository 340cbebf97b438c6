"""Next-token prediction with a GPT on a prepared text corpus."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax.data import batches
from lmjax.data.prepare import prepare
from lmjax.eval import metrics
from lmjax.models import gpt, rnn
from lmjax.tasks.base import Task, padded_batches


def model_config(cfg: ml_collections.ConfigDict, vocab_size: int) -> ml_collections.FrozenConfigDict:
    """The model section with the vocabulary filled in and dtypes resolved (hashable, frozen)."""
    m = cfg.model.to_dict()
    if m["vocab_size"] == 0:
        m["vocab_size"] = vocab_size
    elif m["vocab_size"] < vocab_size:
        raise ValueError(f"model.vocab_size={m['vocab_size']} is smaller than the tokenizer's "
                         f"vocabulary ({vocab_size}): set it to 0 or at least {vocab_size}.")
    if "dtype" in m:
        m["dtype"], m["param_dtype"] = jnp.dtype(m["dtype"]), jnp.dtype(m["param_dtype"])
    if "attention" in m:
        m["attention"] = None if m["attention"] == "auto" else m["attention"]
    return ml_collections.FrozenConfigDict(m)


class LanguageModelTask(Task):
    def __init__(self, cfg: ml_collections.ConfigDict, log=print):
        self.cfg = cfg
        self.data = prepare(cfg.data, log=log)
        self.tokenizer = self.data.tokenizer
        model_cfg = model_config(cfg, self.tokenizer.vocab_size)
        if cfg.model.get("name", "gpt") == "gpt":
            self.model, self.matrix_dims = gpt.GPT(model_cfg), gpt.matrix_dims
        elif cfg.model.name in rnn.CELLS:
            self.model = rnn.RNNLM(model_cfg)
        else:
            raise ValueError(f"model.name={cfg.model.name!r}: use 'gpt', 'lstm' or 'gru'.")
        self.seq_len = cfg.model.block_size

    def describe(self) -> str:
        meta = self.data.meta
        return (f"{meta['train_tokens']:,} training and {meta['val_tokens']:,} validation tokens "
                f"(held out: {', '.join(meta['val_names'])})")

    def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        x = np.zeros((batch_size, self.seq_len), np.int32)
        return {"inputs": x, "targets": x}

    def init_variables(self, rng: jax.Array):
        return self.model.init(rng, self.dummy_batch()["inputs"])

    def loss(self, params, model_state, batch, rng):
        logits = self.model.apply({"params": params}, batch["inputs"], deterministic=False,
                                  rngs={"dropout": rng})
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch["targets"])
        return losses.mean(), ({}, model_state)

    def eval_outputs(self, params, model_state, batch):
        """Sums over the batch, so that many batches (and devices) add up to exact totals."""
        logits = self.model.apply({"params": params}, batch["inputs"], deterministic=True)
        logits = logits.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = logits.argmax(-1) == batch["targets"]
        w = jnp.broadcast_to(batch["weights"][:, None], losses.shape)  # 0 for padding rows
        sums = {"loss": (losses * w).sum(), "accuracy": (correct * w).sum(), "count": w.sum()}
        return {"sums": sums, "examples": {}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        out = super().summarize(sums, examples)
        out["perplexity"] = metrics.perplexity(out["loss"])
        return out

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        return batches.train_batch(self.data.train, self.cfg.seed, step, self.cfg.train.batch_size,
                                   self.seq_len, process_index, process_count)

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        """Fixed validation windows (the same every time)."""
        starts = batches.eval_starts(len(self.data.val), self.seq_len, max_examples)
        return padded_batches(len(starts), batch_size,
                              lambda idx: batches.windows(self.data.val, starts[idx], self.seq_len))

    def samples(self, params, model_state) -> list[str]:
        from lmjax.infer.sample import generate

        s = self.cfg.sample
        if s.num_samples == 0 or s.max_new_tokens == 0:
            return []
        prompt = np.asarray(self.tokenizer.encode(s.prompt), np.int32)
        prompt = np.tile(prompt[None], (s.num_samples, 1))
        params = jax.device_get(params)  # sampling is small: one device does it
        out = generate(self.model, params, jnp.asarray(prompt), jax.random.PRNGKey(self.cfg.seed),
                       max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k)
        return [self.tokenizer.decode(row) for row in np.asarray(out)]
