"""Masked-language-model pretraining of a BERT encoder on a prepared text corpus.

The data are the same prepared token arrays as the GPT's (tokenizer 'wordpiece'), cut into
[CLS] passage [SEP] rows document by document; masking is redone every step (lmjax/data/mlm.py).
Loss and accuracy count the selected positions only (15% of the ordinary tokens), on the
held-out works for validation, whose masks are fixed so evaluations compare.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax import rundir
from lmjax.config import check_text_data
from lmjax.data import mlm, sources
from lmjax.data.batches import spread
from lmjax.data.prepare import Prepared, prepare
from lmjax.eval import metrics
from lmjax.models import bert
from lmjax.parallel.mesh import local_rows
from lmjax.tasks.base import MASKED_LM, Task, epoch_indices, padded_batches, with_tokenizer_file
from lmjax.tasks.encoder import (check_shape_given, check_tokenizer, encoder_params,
                                 fixed_tokenizer, pretrained_model)

EVAL_STEP = 0  # validation rows are masked as at this step (keyed by their own indices)


class MaskedLMTask(Task):
    capabilities = frozenset({MASKED_LM})

    @classmethod
    def check(cls, cfg: ml_collections.ConfigDict) -> None:
        check_text_data(cfg.data)
        sources.check(cfg.data, "corpus", "tokens")

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        if assets is None:
            # init_from continues pretraining a masked-LM run, e.g. a converted Hugging Face
            # BERT on a domain's text: its shape, weights and tokenizer.
            check_shape_given(cfg)
            pre, section = (pretrained_model(cfg, ("mlm",), log) if cfg.init_from
                            else (None, cfg.model))
            model_cfg = bert.BertConfig.from_section(section)  # checked before the data
            data_cfg = cfg.data
            if pre is not None:
                fixed_tokenizer(cfg, pre)  # refuses a data.tokenizer_file of another vocabulary
                data_cfg = with_tokenizer_file(cfg.data, pre.tokenizer_file)
            self.data = prepare(data_cfg, log=log)
            self.tokenizer = self.data.tokenizer
            model_cfg = model_cfg.with_vocab(self.tokenizer.vocab_size)
        else:
            self.tokenizer, model_cfg = assets.tokenizer, bert.BertConfig(**assets.model)
        check_tokenizer(self.tokenizer)
        self.seq_len = self.tokens_per_example = model_cfg.block_size
        self.rate = cfg.data.mask_rate
        self.num_predictions = mlm.num_predictions(self.seq_len, self.rate)
        self.model = bert.MaskedLM(model_cfg)
        self.matrix_dims = bert.matrix_dims

    def load_pretrained(self, params, pretrained):
        """The pretrained masked LM (a shorter context keeps its first positions)."""
        out = {**pretrained, "bert": encoder_params(pretrained, self.seq_len)}
        want = jax.tree.map(jnp.shape, params)
        if jax.tree.map(jnp.shape, out) != want:
            raise ValueError(f"init_from={self.cfg.init_from!r}: its parameters are not this "
                             "masked LM's (another head or shape); continue from a masked-LM run.")
        return out

    @functools.cached_property
    def data(self) -> Prepared:
        """A loaded run's corpus, read on first use, encoded with the run's own tokenizer."""
        return prepare(with_tokenizer_file(self.cfg.data, self.assets.tokenizer_file),
                       log=self.log)

    @functools.cached_property
    def train_rows(self) -> np.ndarray:
        return mlm.passages(self.data.train, self.seq_len, self.tokenizer)

    @functools.cached_property
    def val_rows(self) -> np.ndarray:
        return mlm.passages(self.data.val, self.seq_len, self.tokenizer)

    def run_assets(self) -> rundir.Assets:
        return self._assets(self.model.cfg)

    # An example is a [CLS] passage [SEP] row, before masking.
    def example_arrays(self, split: str = "train") -> dict:
        return {"rows": self.train_rows if split == "train" else self.val_rows}

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["rows"])

    def gather(self, arrays: dict, ids) -> dict:
        return {"inputs": arrays["rows"][ids]}

    def describe(self) -> str:
        meta = self.data.meta
        return (f"{len(self.train_rows):,} training and {len(self.val_rows):,} validation "
                f"passages of <= {self.seq_len} WordPiece tokens (vocabulary "
                f"{self.tokenizer.vocab_size:,}; held out: {', '.join(meta['val_names'])}); "
                f"{self.rate:.0%} of tokens masked, {self.num_predictions} predictions/passage")

    def init_variables(self, rng: jax.Array):
        tokens = jnp.zeros((1, self.seq_len), jnp.int32)
        return self.model.init(rng, tokens, jnp.zeros((1, self.num_predictions), jnp.int32))

    def _scores(self, params, batch, deterministic, rng=None):
        logits = self.model.apply(
            {"params": params}, batch["inputs"], batch["mlm_positions"],
            deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})
        logits = logits.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["mlm_targets"])
        correct = logits.argmax(-1) == batch["mlm_targets"]
        return losses, correct

    def loss(self, params, model_state, batch, rng):
        losses, correct = self._scores(params, batch, False, rng)
        w = batch["mlm_weights"]  # 0 for unused prediction slots: padding never counts
        n = jnp.maximum(w.sum(), 1.0)
        return (losses * w).sum() / n, ({"masked_accuracy": (correct * w).sum() / n}, model_state)

    def eval_outputs(self, params, model_state, batch):
        losses, correct = self._scores(params, batch, True)
        w = batch["mlm_weights"] * batch["weights"][:, None]
        return {"sums": {"loss": (losses * w).sum(), "masked_accuracy": (correct * w).sum(),
                         "count": w.sum()}, "examples": {}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        out = super().summarize(sums, examples)  # loss and accuracy per masked token
        out["perplexity"] = metrics.perplexity(out["loss"])
        return out

    def _masked(self, rows, ids, step):
        return mlm.mask_batch(rows[ids], ids, self.cfg.seed, step, self.tokenizer,
                              self.num_predictions, self.rate)

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        ids = epoch_indices(self.cfg.seed, step, self.cfg.train.batch_size, len(self.train_rows))
        return self._masked(self.train_rows, local_rows(ids, process_index, process_count), step)

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        ids = spread(len(self.val_rows), max_examples)  # evenly over the held-out works
        return padded_batches(len(ids), batch_size,
                              lambda i: self._masked(self.val_rows, ids[i], EVAL_STEP))

    def samples(self, params, model_state) -> list[str]:
        """A few held-out passages with their masked words filled in: 'truth [was→is]'."""
        n = self.cfg.fill_mask.num_passages
        if n == 0:
            return []
        ids = np.linspace(0, len(self.val_rows) - 1, n).round().astype(int)
        batch = self._masked(self.val_rows, ids, EVAL_STEP)
        params = jax.device_get(params)
        logits = self.model.apply({"params": params}, batch["inputs"], batch["mlm_positions"])
        guess = np.asarray(logits.argmax(-1))
        out = []
        for r in range(n):
            row = self.val_rows[ids[r]]
            guessed = {int(p): int(g) for p, g, w in zip(batch["mlm_positions"][r], guess[r],
                                                          batch["mlm_weights"][r]) if w}
            text = ""
            for p, t in enumerate(row[:self.cfg.fill_mask.max_tokens]):
                if t in self.tokenizer.special_ids:
                    continue
                piece = self.tokenizer.decode([t])
                if p in guessed:
                    g = self.tokenizer.decode([guessed[p]])
                    glue = "##" if piece.startswith("##") else ""
                    piece = f"{glue}[{piece.lstrip('#')}→{g.lstrip('#')}]"
                text += piece[2:] if piece.startswith("##") else " " + piece
            out.append(text.strip())
        return out
