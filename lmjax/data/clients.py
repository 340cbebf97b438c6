"""Which training examples each simulated federated client holds.

- 'iid': a random equal share each;
- 'shards': McMahan et al.'s pathological non-IID split: sort by label, cut into
  2 x clients shards, give each client 2 (so most clients see only two classes);
- 'dirichlet': per class, shares drawn from Dirichlet(alpha) over clients (small alpha: each
  client dominated by a few classes; Hsu et al., 2019);
- 'groups': one client per group id (e.g. one per play of Shakespeare, LEAF's setting).

For a language model the examples are windows of a token stream, and `document_windows` makes
one client per training document (per work of Shakespeare: LEAF's one client per play).
"""

from __future__ import annotations

import numpy as np

SPLITS = ("iid", "shards", "dirichlet", "groups")


def split_clients(labels: np.ndarray, num_clients: int, scheme: str, seed: int,
                  alpha: float = 0.5) -> list[np.ndarray]:
    """Example indices of each client, a pure function of the arguments. `labels` are the
    class labels (or, for 'groups', the group id of each example)."""
    n = len(labels)
    if scheme not in SPLITS:
        raise ValueError(f"federated.split={scheme!r}: use one of {', '.join(SPLITS)}.")
    if scheme == "groups":
        ids = np.unique(labels)
        return [np.flatnonzero(labels == g) for g in ids]
    if not 0 < num_clients <= n:
        raise ValueError(f"federated.clients={num_clients}: between 1 and the {n} training "
                         "examples (each client needs at least one).")
    rng = np.random.default_rng([seed, 7])
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), num_clients)]
    if scheme == "shards":
        if 2 * num_clients > n:
            raise ValueError(f"federated.clients={num_clients}: the shards split needs 2 "
                             f"shards per client, more than the {n} examples.")
        order = np.lexsort((rng.random(n), labels))  # by label, ties in random order
        shards = np.array_split(order, 2 * num_clients)
        pick = rng.permutation(2 * num_clients).reshape(num_clients, 2)
        return [np.sort(np.concatenate([shards[a], shards[b]])) for a, b in pick]
    if alpha <= 0:
        raise ValueError(f"federated.alpha={alpha}: the Dirichlet concentration must be > 0.")
    owners = np.empty(n, np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)
        owners[idx] = np.minimum(np.searchsorted(cuts, np.arange(len(idx)), side="right"),
                                 num_clients - 1)  # rounding may leave the last cut short
    clients = [np.flatnonzero(owners == k) for k in range(num_clients)]
    # A client left empty by the draw takes one example from the largest: no client is idle.
    for k, part in enumerate(clients):
        if len(part) == 0:
            big = max(range(num_clients), key=lambda j: len(clients[j]))
            clients[k], clients[big] = clients[big][-1:], clients[big][:-1]
    return clients


def document_windows(lengths: list[int], total: int, seq_len: int) -> list[np.ndarray]:
    """Per document, the starts of its non-overlapping windows of seq_len + 1 tokens (inputs and
    next-token targets) in the concatenated stream of `total` tokens, which holds the documents
    in order with these `lengths` (separator included): a client's examples."""
    if sum(lengths) != total:
        raise ValueError(f"the documents' token counts add up to {sum(lengths):,}, not the "
                         f"{total:,} of the prepared training stream: clients per document need "
                         "the corpus as prepared (no data.scrub_pii, the same tokenizer).")
    ends = np.cumsum(lengths)
    clients = [np.arange(end - n, end - seq_len, seq_len, dtype=np.int64)
               for n, end in zip(lengths, ends)]
    short = [i for i, c in enumerate(clients) if len(c) == 0]
    if short:
        raise ValueError(f"document {short[0]} has fewer than model.block_size + 1 = "
                         f"{seq_len + 1} tokens: shorten model.block_size.")
    return clients
