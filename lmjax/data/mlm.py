"""Masked-LM data: [CLS] passage [SEP] [PAD]... sequences and BERT's masking.

Passages are cut from each document separately (never across two works), so the last passage
of a document is shorter and padded. Masking is redone at every step as a pure function of
(seed, step, example index) — dynamic masking as in RoBERTa — so a resumed run sees the same
masks, and every process can compute its own rows.
"""

from __future__ import annotations

import numpy as np

MASK_RATE = 0.15  # share of a sequence's ordinary tokens that the model must predict
# Of the selected tokens: 80% become [MASK], 10% a random ordinary token, 10% stay (BERT).
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1


def split_documents(stream: np.ndarray, sep_id: int) -> list[np.ndarray]:
    """A prepared 1-D token array (documents separated by [SEP]) back into its documents."""
    stream = np.asarray(stream)
    cuts = np.flatnonzero(stream == sep_id)
    docs = np.split(stream, cuts + 1)
    return [d[d != sep_id] for d in docs if (d != sep_id).any()]


def frame(chunks: list[np.ndarray], seq_len: int, cls_id: int, sep_id: int,
          pad_id: int) -> np.ndarray:
    """Each chunk (at most seq_len - 2 ids) as one row [CLS] chunk [SEP] [PAD]...: (N, seq_len)."""
    out = np.full((len(chunks), seq_len), pad_id, np.int32)
    for i, c in enumerate(chunks):
        if len(c) > seq_len - 2:
            raise ValueError(f"chunk of {len(c)} tokens does not fit {seq_len} with [CLS]/[SEP]")
        out[i, 0] = cls_id
        out[i, 1:len(c) + 1] = c
        out[i, len(c) + 1] = sep_id
    return out


def chunk(doc: np.ndarray, size: int, min_size: int = 1) -> list[np.ndarray]:
    """Consecutive non-overlapping pieces of `size` ids; a shorter tail is kept if >= min_size."""
    pieces = [doc[i:i + size] for i in range(0, len(doc), size)]
    return [p for p in pieces if len(p) >= min_size]


def passages(stream: np.ndarray, seq_len: int, tokenizer, min_tokens: int = 8) -> np.ndarray:
    """Framed passages (N, seq_len) from a prepared token array, document by document."""
    rows = []
    for doc in split_documents(stream, tokenizer.sep_id):
        rows += chunk(doc, seq_len - 2, min_tokens)
    return frame(rows, seq_len, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)


def num_predictions(seq_len: int, rate: float = MASK_RATE) -> int:
    """Prediction slots per sequence: enough for `rate` of a full sequence's ordinary tokens."""
    return max(1, int(np.floor(rate * (seq_len - 2) + 0.5)))


def mask_example(tokens: np.ndarray, rng: np.random.Generator, mask_id: int,
                 ordinary: np.ndarray, max_predictions: int,
                 rate: float = MASK_RATE) -> dict[str, np.ndarray]:
    """BERT's masking of one sequence. `ordinary` is the sorted array of the vocabulary's
    ordinary ids: every id but the special tokens ([PAD], [CLS], ...), wherever they are.

    round(rate * n) of its n ordinary tokens are selected (at least one, at most
    `max_predictions`); each becomes [MASK] with probability 0.8, a random ordinary token with
    0.1, or stays itself. Returns the corrupted `inputs`, the selected `positions`, their
    original ids `targets` and `weights` (1 for a real prediction, 0 for an unused slot).
    """
    at = np.minimum(np.searchsorted(ordinary, tokens), len(ordinary) - 1)
    candidates = np.flatnonzero(ordinary[at] == tokens)
    n = min(max_predictions, len(candidates),
            max(1, int(np.floor(rate * len(candidates) + 0.5))))
    chosen = np.sort(rng.choice(candidates, size=n, replace=False))
    inputs = tokens.copy()
    u = rng.random(n)
    replace = ordinary[rng.integers(0, len(ordinary), size=n)]
    inputs[chosen] = np.where(u < MASK_SHARE, mask_id,
                              np.where(u < MASK_SHARE + RANDOM_SHARE, replace, tokens[chosen]))
    out = {"positions": np.zeros(max_predictions, np.int32),
           "targets": np.zeros(max_predictions, np.int32),
           "weights": np.zeros(max_predictions, np.float32)}
    out["positions"][:n], out["targets"][:n], out["weights"][:n] = chosen, tokens[chosen], 1.0
    return {"inputs": inputs, **out}


def mask_batch(rows: np.ndarray, example_ids: np.ndarray, seed: int, step: int, tokenizer,
               max_predictions: int | None = None,
               rate: float = MASK_RATE) -> dict[str, np.ndarray]:
    """Masks each row with a generator keyed by (seed, step, example id): a pure function.

    Keys: inputs (B, L), mlm_positions / mlm_targets / mlm_weights (B, P).
    """
    max_predictions = max_predictions or num_predictions(rows.shape[1], rate)
    ordinary = ordinary_ids(tokenizer)
    out = [mask_example(np.asarray(r, np.int32), np.random.default_rng([seed, step, int(e)]),
                        tokenizer.mask_id, ordinary, max_predictions, rate)
           for r, e in zip(rows, example_ids)]
    stack = lambda k: np.stack([o[k] for o in out])  # noqa: E731
    return {"inputs": stack("inputs"), "mlm_positions": stack("positions"),
            "mlm_targets": stack("targets"), "mlm_weights": stack("weights")}


def ordinary_ids(tokenizer) -> np.ndarray:
    """The ids masking may select and draw: all but the special tokens. lmjax's WordPiece puts
    them first; a Hugging Face BERT vocabulary has [PAD] 0 and [UNK]..[MASK] 100-103."""
    special = np.asarray(sorted(getattr(tokenizer, "special_ids", ())), np.int64)
    if not len(special) or getattr(tokenizer, "mask_id", None) is None:
        raise ValueError("masked-LM data needs a tokenizer with [PAD]/[UNK]/[CLS]/[SEP]/[MASK]: "
                         "use --config.data.tokenizer=wordpiece or a BERT tokenizer_file.")
    return np.setdiff1d(np.arange(tokenizer.vocab_size), special).astype(np.int32)
