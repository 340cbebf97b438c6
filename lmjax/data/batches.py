"""Language-model batches as pure functions of (seed, step): a resumed run sees the same data."""

from __future__ import annotations

import numpy as np


def window_starts(seed: int, step: int, batch_size: int, n_tokens: int, seq_len: int) -> np.ndarray:
    """Random window starts for one global batch, drawn from a generator keyed by (seed, step)."""
    if n_tokens <= seq_len + 1:
        raise ValueError(f"{n_tokens} tokens are too few for windows of {seq_len}+1.")
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_tokens - seq_len - 1, size=batch_size)


def windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    """Inputs and next-token targets for windows beginning at `starts`: NumPy arrays in, NumPy
    out; or traced inside a jitted function (federated rounds gather windows on the device)."""
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    chunk = tokens[idx].astype(np.int32)
    return {"inputs": chunk[:, :-1], "targets": chunk[:, 1:]}


def train_batch(tokens, seed: int, step: int, batch_size: int, seq_len: int,
                process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
    """This process's rows of the global batch for `step` (all rows on a single host)."""
    starts = window_starts(seed, step, batch_size, len(tokens), seq_len)
    per_host = batch_size // process_count
    return windows(tokens, starts[process_index * per_host:(process_index + 1) * per_host], seq_len)


def spread(n: int, k: int) -> np.ndarray:
    """Indices of k items spread evenly over n (all n when k is 0 or at least n)."""
    if 0 < k < n:
        return np.linspace(0, n - 1, k).round().astype(int)
    return np.arange(n)


def eval_starts(n_tokens: int, seq_len: int, max_windows: int = 0) -> np.ndarray:
    """Non-overlapping windows covering the split; `max_windows` > 0 spreads that many evenly."""
    starts = np.arange(0, n_tokens - seq_len - 1, seq_len)
    return starts[spread(len(starts), max_windows)]
