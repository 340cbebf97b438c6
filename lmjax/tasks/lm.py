"""Next-token prediction with a GPT, a decoder family's model (Llama, Qwen, Mistral, Gemma) or
an LSTM/GRU on a prepared text corpus."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax import rundir
from lmjax.config import check_text_data
from lmjax.data import batches, sources
from lmjax.data.clients import document_windows
from lmjax.data.prepare import Prepared, prepare
from lmjax.eval import metrics
from lmjax.models import decoder, gpt, rnn
from lmjax.models.generator import Generator, Request
from lmjax.tasks.assets import read_assets
from lmjax.tasks.base import DECODES, Task, padded_batches, with_tokenizer_file

# model.name='init_from': the init_from run's model (a converted Hugging Face checkpoint), with
# these fields of this config (how it computes, not what it is; block_size 0: the run's).
PRETRAINED = "init_from"
COMPUTE_FIELDS = ("dtype", "param_dtype", "attention", "scan_layers", "remat", "dropout",
                  "block_size")


@dataclasses.dataclass(frozen=True)
class Family:
    """What the language-model tasks need of a model family."""
    config: type                              # its typed config
    module: type
    matrix_dims: Callable | None = None       # its weight matrices, for Muon
    head_logits: Callable | None = None       # (params, hidden, config) -> logits: loss_chunk

    def output_layer(self, model_cfg) -> Callable | None:
        """(params, hidden) -> logits of a model of this config (train.loss_chunk), or None."""
        return None if self.head_logits is None else functools.partial(self.head_logits,
                                                                       cfg=model_cfg)


GPT = Family(gpt.GPTConfig, gpt.GPT, gpt.matrix_dims,
             lambda params, hidden, cfg: gpt.head_logits(params, hidden, cfg.dtype))
DECODER = Family(decoder.DecoderConfig, decoder.Decoder, decoder.matrix_dims,
                 decoder.head_logits)


def model_family(section) -> Family:
    """The family of `model.name` (a config section or a stored model dict): 'gpt' (default),
    a decoder family (llama, qwen2, qwen3, mistral, gemma2, gemma3), 'lstm' or 'gru'."""
    name = section.get("name", "gpt")
    if name == "gpt":
        return GPT
    if name in decoder.FAMILIES:
        return DECODER
    if name in rnn.CELLS:
        return Family(rnn.RNNConfig, rnn.RNNLM)
    raise ValueError(f"model.name={name!r}: use 'gpt', {', '.join(map(repr, decoder.FAMILIES))}"
                     f", 'lstm', 'gru' or {PRETRAINED!r} (with init_from: that run's model).")


def model_section(cfg: ml_collections.ConfigDict, log=print,
                  tasks=("lm", "sft")) -> tuple[dict, rundir.Assets | None]:
    """(the model section this config builds, the init_from run's assets or None).

    With model.name='init_from', the section is the init_from run's model (e.g. a Qwen 3
    converted by `convert from_hf`) with this config's COMPUTE_FIELDS; any other field given
    here must agree with the run's."""
    section = cfg.model.to_dict()
    if section.get("name") != PRETRAINED:
        return section, None
    if not cfg.get("init_from"):
        raise ValueError(f"model.name={PRETRAINED!r} takes the model of the init_from run: set "
                         "--config.init_from=<a run, e.g. one written by lmjax convert "
                         "from_hf>.")
    pre = read_assets(cfg.init_from, log=log)
    if pre.task not in tasks:
        raise ValueError(f"init_from={cfg.init_from!r} is a {pre.task!r} run; task={cfg.task} "
                         f"starts from a language model (task {', '.join(tasks)}).")
    out = dict(pre.model)
    diffs = [f"model.{k}: pretrained {out[k]!r}, here {v!r}" for k, v in section.items()
             if k not in COMPUTE_FIELDS + ("name",) and k in out and out[k] != v]
    if diffs:
        raise ValueError(f"The model here differs from the pretrained one in {cfg.init_from}: "
                         f"{'; '.join(diffs)}. Leave those fields out with "
                         f"model.name={PRETRAINED!r}.")
    out.update({k: section[k] for k in COMPUTE_FIELDS if section.get(k)})
    if section.get("block_size", 0) > pre.model.get("context_limit", 0) > 0:
        raise ValueError(f"model.block_size={section['block_size']}: the pretrained model "
                         f"supports {pre.model['context_limit']} positions.")
    return out, pre


def chunked_losses(hidden: jax.Array, targets: jax.Array, logits_fn, chunk: int) -> jax.Array:
    """Per-token cross-entropy (float32) over `chunk` positions at a time.

    Each chunk's logits are computed, reduced to its losses and dropped; under
    `jax.checkpoint` the backward pass recomputes them chunk by chunk too. So the (batch x
    chunk x vocab) logits are the most ever held, instead of (batch x length x vocab) twice
    (compute dtype and float32): for GPT-2 124M at batch 32 x 1024 that is 6.6 GB of float32
    logits alone, against 0.8 GB at chunk 128.
    """
    batch, length, width = hidden.shape
    n = length // chunk
    pieces = hidden.reshape(batch, n, chunk, width).swapaxes(0, 1)
    labels = targets.reshape(batch, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one(args):
        h, t = args
        return optax.softmax_cross_entropy_with_integer_labels(
            logits_fn(h).astype(jnp.float32), t)

    return jax.lax.map(one, (pieces, labels)).swapaxes(0, 1).reshape(batch, length)


class LanguageModelTask(Task):
    capabilities = frozenset({DECODES})

    @classmethod
    def check(cls, cfg: ml_collections.ConfigDict) -> None:
        check_text_data(cfg.data)
        sources.check(cfg.data, "corpus", "tokens")

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        if assets is None:
            section, pre = model_section(cfg, log)
            family = model_family(section)
            model_cfg = family.config.from_section(section)  # checked before the data is read
            if pre is not None:  # the pretrained run's tokenizer encodes the data
                self.data = prepare(with_tokenizer_file(cfg.data, pre.tokenizer_file), log=log)
            else:
                self.data = prepare(cfg.data, log=log)
            self.tokenizer = self.data.tokenizer
            model_cfg = model_cfg.with_vocab(self.tokenizer.vocab_size)
        else:
            family = model_family(assets.model)
            self.tokenizer = assets.tokenizer
            model_cfg = family.config(**assets.model)
        self.model = family.module(model_cfg)
        self.matrix_dims, self.head_logits = family.matrix_dims, family.output_layer(model_cfg)
        self.seq_len = self.tokens_per_example = model_cfg.block_size
        self.loss_chunk = cfg.train.get("loss_chunk", 0)
        if self.loss_chunk and (self.head_logits is None or self.seq_len % self.loss_chunk):
            raise ValueError(f"train.loss_chunk={self.loss_chunk}: a transformer's output layer "
                             f"is chunked along its sequence; use a divisor of model.block_size="
                             f"{self.seq_len}, or 0 (no chunking).")

    @functools.cached_property
    def data(self) -> Prepared:
        """A loaded run's data, read on first use, encoded with the run's own tokenizer."""
        return prepare(with_tokenizer_file(self.cfg.data, self.assets.tokenizer_file),
                       log=self.log)

    def run_assets(self) -> rundir.Assets:
        return self._assets(self.model.cfg)

    def describe(self) -> str:
        meta = self.data.meta
        return (f"{meta['train_tokens']:,} training and {meta['val_tokens']:,} validation tokens "
                f"(held out: {', '.join(meta['val_names'])})")

    def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        x = np.zeros((batch_size, self.seq_len), np.int32)
        return {"inputs": x, "targets": x}

    # An example is the window of seq_len + 1 tokens that starts at a position of the split.
    def example_arrays(self, split: str = "train") -> dict:
        return {"tokens": self.data.train if split == "train" else self.data.val}

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["tokens"]) - self.seq_len - 1

    def gather(self, arrays: dict, ids) -> dict:
        return batches.windows(arrays["tokens"], ids, self.seq_len)

    def example_groups(self) -> list[np.ndarray]:
        """The non-overlapping windows of each training document (LEAF's one client per play)."""
        lengths = self.data.train_doc_lengths
        if lengths is None:
            raise ValueError(f"data.name={self.cfg.data.name!r} keeps no document boundaries: "
                             "one client per document needs a corpus that lmjax prepares "
                             "(shakespeare, files, tfds:...).")
        return document_windows(list(lengths), len(self.data.train), self.seq_len)

    def init_variables(self, rng: jax.Array):
        return self.model.init(rng, self.dummy_batch()["inputs"])

    def loss(self, params, model_state, batch, rng):
        if self.loss_chunk:
            hidden = self.model.apply({"params": params}, batch["inputs"], deterministic=False,
                                      rngs={"dropout": rng}, hidden=True)
            losses = chunked_losses(hidden, batch["targets"],
                                    lambda h: self.head_logits(params, h), self.loss_chunk)
            return losses.mean(), ({}, model_state)
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
        s = self.cfg.sample
        if s.num_samples == 0 or s.max_new_tokens == 0:
            return []
        params = jax.device_get(params)  # sampling is small: one device does it
        # Past end-of-text too: a sample shows what follows a document as well.
        gen = Generator(self.model, params, self.tokenizer, max_batch=s.num_samples,
                        stop_at_eot=False)
        rows = gen.generate([Request(s.prompt, s.max_new_tokens, temperature=s.temperature,
                                     top_k=s.top_k, seed=self.cfg.seed + i)
                             for i in range(s.num_samples)])
        return [s.prompt + row.text for row in rows]
