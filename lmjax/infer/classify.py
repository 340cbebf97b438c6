"""Classifying texts with a trained BERT text classifier (configs/classify.py runs).

Texts are framed exactly as in training ([CLS] ids [SEP] [PAD]...), longer ones truncated to
the model's context; batches are rounded up to a power of two so that few programs compile.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.data.mlm import frame
from lmjax.data.text_classification import encode_texts
from lmjax.explain import attention as attn
from lmjax.explain.sequences import token_strings
from lmjax.models.generator import pow2


class TextClassifier:
    def __init__(self, model, params, tokenizer, class_names: Sequence[str], seq_len: int,
                 max_batch: int = 64):
        self.tokenizer, self.class_names = tokenizer, list(class_names)
        self.seq_len, self.max_batch, self.params = seq_len, max_batch, params
        self._probs = jax.jit(lambda p, x: _softmax(
            model.apply({"params": p}, x, deterministic=True)))
        # The same forward pass, also giving [CLS]'s row of the attention rollout and of the
        # last layer's head-mean map, captured with sow from the model's own attention
        # (lmjax/explain/attention.py); compiled on the first request that asks for it.
        self._probs_attention = jax.jit(lambda p, x: _with_cls_rows(attn.apply_with_attention(
            model, {"params": p}, x, deterministic=True)))

    @classmethod
    def from_loaded(cls, loaded, max_batch: int = 64) -> "TextClassifier":
        """From `infer.load.load(workdir, needs=(TEXT_CLASSES,))` (LoRA already merged)."""
        task = loaded.task
        return cls(loaded.model, loaded.params, task.tokenizer, task.class_names, task.seq_len,
                   max_batch)

    def classify(self, texts: Sequence[str], return_attention: bool = False) -> list[dict]:
        """[{label, probabilities: {class: p}, truncated}] for each text, in order; with
        `return_attention`, also {attention: {tokens, rollout, last_layer}}: how much [CLS], the
        position the classifier reads, draws on each token (each row sums to 1)."""
        if not 0 < len(texts) <= self.max_batch:
            raise ValueError(f"{len(texts)} texts: give between 1 and {self.max_batch}.")
        tok, room = self.tokenizer, self.seq_len - 2
        ids = encode_texts(tok, list(texts))
        rows = frame([x[:room] for x in ids], self.seq_len, tok.cls_id, tok.sep_id, tok.pad_id)
        batch = pow2(len(rows))
        padded = np.full((batch, self.seq_len), tok.pad_id, np.int32)
        padded[:len(rows)] = rows
        tokens = jnp.asarray(padded)
        if return_attention:
            probs, roll, last = map(np.asarray, self._probs_attention(self.params, tokens))
        else:
            probs = np.asarray(self._probs(self.params, tokens))
        probs = probs[:len(rows)]
        out = [{"label": self.class_names[int(p.argmax())],
                "probabilities": {n: float(v) for n, v in zip(self.class_names, p)},
                "truncated": len(x) > room} for p, x in zip(probs, ids)]
        if return_attention:
            for i, (result, x) in enumerate(zip(out, ids)):
                n = min(len(x), room) + 2  # [CLS] ids [SEP]: the keys past them are padding
                result["attention"] = {"tokens": token_strings(tok, padded[i, :n]),
                                       "rollout": roll[i, :n].tolist(),
                                       "last_layer": last[i, :n].tolist()}
        return out


def _softmax(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _with_cls_rows(out: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, ...]:
    """(probabilities, rollout, last layer's head mean), the last two (batch, keys): the rows of
    position 0, [CLS]."""
    logits, maps = out
    return _softmax(logits), attn.rollout(maps)[:, 0], maps[-1].mean(1)[:, 0]
