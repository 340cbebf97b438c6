"""Explanations of the sequence models: a BERT text classifier's token attributions
(integrated gradients over the embeddings, LIME over words) and the attention maps of GPT,
decoder-family and BERT models with their rollout, for token rows already framed as the model
reads them."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.data.mlm import frame
from lmjax.data.text_classification import encode_texts
from lmjax.explain import attention as attn
from lmjax.explain import lime as limelib
from lmjax.explain import text as textlib
from lmjax.explain.images import METHODS as IMAGE_METHODS

TEXT_METHODS = ("ig", "lime", "attention")


def check_method(kind: str, method: str, workdir: str) -> None:
    """One line naming the methods this kind of run has, for a method it has not."""
    if kind == "image" and method not in IMAGE_METHODS:
        extra = (", and attention maps are for language model and BERT runs"
                 if method == "attention" else "")
        raise ValueError(f"--method={method}: {workdir} is an image classifier{extra}: use "
                         f"one of {', '.join(IMAGE_METHODS)}.")
    if kind == "text" and method not in TEXT_METHODS:
        what = " explains image classifiers" if method in IMAGE_METHODS else " is not a method"
        raise ValueError(f"--method={method}{what}; {workdir} is a BERT text classifier: use "
                         "--method=ig, lime or attention.")
    if kind in ("lm", "mlm") and method != "attention":
        what = "a language model" if kind == "lm" else "a BERT masked-LM"
        raise ValueError(f"--method={method}: {workdir} is {what} run, whose predictions are "
                         "not classes: use --method=attention.")


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each id as its own vocabulary entry (WordPiece keeps '##' on continuations; a
    character or byte-level tokenizer decodes one id at a time)."""
    inner = getattr(tokenizer, "_tok", None)
    if inner is not None and hasattr(inner, "id_to_token"):
        return [inner.id_to_token(int(i)) or f"<{int(i)}>" for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]


def lengths(tokens: np.ndarray, pad_id: int | None) -> np.ndarray:
    """Each row's length without its trailing [PAD]s (the whole row when there is no pad)."""
    tokens = np.asarray(tokens)
    if pad_id is None:
        return np.full(len(tokens), tokens.shape[1])
    real = tokens != pad_id
    return np.where(real.any(1), tokens.shape[1] - np.argmax(real[:, ::-1], 1), 0)


def frame_texts(tokenizer, texts: Sequence[str], seq_len: int) -> np.ndarray:
    """(N, seq_len): texts as a BERT reads them, [CLS] ids [SEP] [PAD]..., truncated."""
    ids = encode_texts(tokenizer, list(texts))
    return frame([x[:seq_len - 2] for x in ids], seq_len, tokenizer.cls_id, tokenizer.sep_id,
                 tokenizer.pad_id)


def class_probabilities(module, params, tokenizer, seq_len: int,
                        chunk: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """texts -> (N, classes) probabilities of a BERT classifier, in fixed-size padded chunks
    (one compiled program for LIME's thousand samples)."""
    probs = jax.jit(lambda p, x: jax.nn.softmax(
        module.apply({"params": p}, x, deterministic=True).astype(jnp.float32), -1))

    def run(texts: Sequence[str]) -> np.ndarray:
        rows = frame_texts(tokenizer, texts, seq_len)
        size = min(chunk, max(1, 1 << (len(rows) - 1).bit_length()))
        out = []
        for i in range(0, len(rows), size):
            part = rows[i:i + size]
            padded = np.full((size, seq_len), tokenizer.pad_id, np.int32)
            padded[:len(part)] = part
            out.append(np.asarray(probs(params, jnp.asarray(padded)))[:len(part)])
        return np.concatenate(out)

    return run


def token_ig(module, params, tokens: np.ndarray, targets: np.ndarray, pad_id: int,
             steps: int = 64, chunk: int = 16) -> np.ndarray:
    """(N, seq_len) integrated gradients of each token's embedding for the target logit, from
    the [PAD] embeddings (lmjax/explain/text.py), in chunks of a fixed shape."""
    chex.assert_rank(tokens, 2)
    out = []
    for i in range(0, len(tokens), chunk):
        part, t = tokens[i:i + chunk], targets[i:i + chunk]
        n = len(part)
        padded = np.full((chunk, tokens.shape[1]), pad_id, np.int32)
        padded[:n] = part
        tt = np.zeros(chunk, np.int32)
        tt[:n] = t
        out.append(np.asarray(textlib.token_integrated_gradients(
            module, {"params": params}, jnp.asarray(padded), jnp.asarray(tt), pad_id,
            steps))[:n])
    return np.concatenate(out)


@dataclasses.dataclass
class Attention:
    maps: np.ndarray     # (layers, heads, T, T) of one example, cropped to its real tokens
    rollout: np.ndarray  # (T, T)
    tokens: list[str]


def attention(module, params, tokens: np.ndarray, tokenizer, pad_id: int | None,
              chunk: int = 16) -> list[Attention]:
    """Per example, its attention maps (captured with sow from the model's own attention) and
    their rollout, cropped to the tokens before its padding. A scanned model is unscanned first."""
    module, params = attn.unscanned(module, params)
    maps_fn = jax.jit(lambda p, x: _maps_and_rollout(module, p, x))
    out = []
    for i in range(0, len(tokens), chunk):
        part = np.asarray(tokens[i:i + chunk])
        maps, roll = maps_fn(params, jnp.asarray(part))
        maps, roll = np.asarray(maps), np.asarray(roll)
        for j, n in enumerate(lengths(part, pad_id)):
            out.append(Attention(maps=maps[:, j, :, :n, :n], rollout=roll[j, :n, :n],
                                 tokens=token_strings(tokenizer, part[j, :n])))
    return out


def _maps_and_rollout(module, params, tokens):
    maps = attn.attention_maps(module, {"params": params}, tokens)
    return maps, attn.rollout(maps)


def lime_words(text: str, target: int, probabilities: Callable, samples: int = 1000,
               seed: int = 0, mask: str = "[UNK]") -> tuple[list[str], limelib.LimeResult]:
    """LIME over a passage's words (lime's LimeTextExplainer), a removed word replaced by
    `mask` (the tokenizer's unknown token) so the others keep their positions."""
    return limelib.explain_text(text, target, probabilities, samples, seed, mask_string=mask)
