"""Many token sequences scored at once: sorted by length, padded to a few shapes, run through
the one decoder's `score` (lmjax/models/decoding.py). The evaluation harness
(lmjax/eval/harness_lm.py) and the server's echo and logprobs (lmjax/serve/openai_api.py)
both score through here.

Rows are padded on the right to 16, 32, 64, ... tokens (at most the context + 1) and batched
up to `max_batch` rows or `max_tokens` tokens, whichever is fewer, in powers of two: a handful
of compiled programs, whatever the requests' lengths.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import numpy as np

from lmjax.models import decoding as dec
from lmjax.models.generator import pow2


@dataclasses.dataclass
class RowScore:
    """One row's scores; entry i is about token i + 1 (token 0 has no prediction)."""
    logprobs: np.ndarray      # (n - 1,) float32: log p(token i + 1 | the tokens before)
    greedy: np.ndarray        # (n - 1,) int32: the most likely token at each position
    top_logprobs: np.ndarray  # (n - 1, k) float32, descending
    top_ids: np.ndarray       # (n - 1, k) int32


def _top_k_bucket(k: int) -> int:
    """Top-k sizes compile as 0, 1, 5 or 20 (and the rows are cut to what was asked)."""
    return next((b for b in (0, 1, 5, 20) if k <= b), k)


class Scorer:
    """`scorer(rows, top_k)`: each row's `RowScore`, in the order given. Rows hold 1 to
    context + 1 token ids (the model reads all but the last). Thread-safe: calls run one at a
    time."""

    def __init__(self, model, params, max_batch: int = 32, max_tokens: int = 8192):
        self.model, self.params = model, params
        self.context = model.cfg.block_size
        self.max_batch, self.max_tokens = max_batch, max_tokens
        self._lock = threading.Lock()

    def length_bucket(self, n: int) -> int:
        return min(max(16, pow2(n)), self.context + 1)

    def __call__(self, rows: Sequence[Sequence[int]], top_k: int = 0) -> list[RowScore]:
        lengths = [len(r) for r in rows]
        if any(not 0 < n <= self.context + 1 for n in lengths):
            raise ValueError(f"rows of 1 to {self.context + 1} tokens can be scored (the "
                             f"model's context is {self.context}); got {max(lengths)}.")
        k = _top_k_bucket(top_k)
        order = sorted(range(len(rows)), key=lambda i: -lengths[i])
        out: list[RowScore | None] = [None] * len(rows)
        with self._lock:
            at = 0
            while at < len(order):
                width = self.length_bucket(lengths[order[at]])
                fits = max(1, min(self.max_batch, self.max_tokens // width))
                take = order[at:at + pow2(fits + 1) // 2]  # a power of two of rows at most
                at += len(take)
                batch = pow2(len(take))
                tokens = np.zeros((batch, width), np.int32)
                row_lengths = np.zeros((batch,), np.int32)
                for j, i in enumerate(take):
                    tokens[j, :lengths[i]] = rows[i]
                    row_lengths[j] = lengths[i]
                s = dec.score(self.model, self.params, tokens, row_lengths, top_k=k)
                logprobs, greedy, top_lp, top_ids = (np.array(x) for x in (
                    s.logprobs, s.greedy, s.top_logprobs, s.top_ids))
                for j, i in enumerate(take):
                    n = lengths[i] - 1
                    out[i] = RowScore(logprobs[j, :n], greedy[j, :n], top_lp[j, :n, :top_k],
                                      top_ids[j, :n, :top_k])
        return out
