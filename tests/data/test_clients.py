"""Client splits: each a partition of the training set, as IID or as skewed as asked."""

import numpy as np
import pytest

from lmjax.data.clients import split_clients

LABELS = np.random.default_rng(1).integers(0, 10, 2000)


def _is_partition(clients, n):
    joined = np.concatenate(clients)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("scheme", ["iid", "shards", "dirichlet"])
def test_every_split_is_a_partition_and_a_function_of_the_seed(scheme):
    clients = split_clients(LABELS, 20, scheme, seed=3, alpha=0.3)
    assert len(clients) == 20 and all(len(c) > 0 for c in clients)
    assert _is_partition(clients, len(LABELS))
    again = split_clients(LABELS, 20, scheme, seed=3, alpha=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(clients, again))


def _classes_per_client(clients):
    return np.array([len(np.unique(LABELS[c])) for c in clients])


def test_shards_give_most_clients_two_classes_and_iid_all_ten():
    shards = _classes_per_client(split_clients(LABELS, 20, "shards", seed=0))
    iid = _classes_per_client(split_clients(LABELS, 20, "iid", seed=0))
    assert np.median(shards) <= 3 and shards.max() <= 4  # a shard may straddle two labels
    assert iid.min() == 10
    sizes = [len(c) for c in split_clients(LABELS, 20, "shards", seed=0)]
    assert max(sizes) - min(sizes) <= 2  # 2 x (2000 / 40) each


def test_smaller_dirichlet_alpha_is_less_iid():
    def skew(alpha):  # mean share of a client's examples in its most common class
        clients = split_clients(LABELS, 20, "dirichlet", seed=0, alpha=alpha)
        return np.mean([np.bincount(LABELS[c]).max() / len(c) for c in clients])
    assert skew(0.1) > skew(1.0) > skew(100.0)
    assert skew(100.0) < 0.2  # near IID: about a tenth


def test_groups_give_one_client_per_group_and_bad_input_is_named():
    groups = np.array([2, 0, 2, 1, 0])
    assert [list(c) for c in split_clients(groups, 0, "groups", 0)] == [[1, 4], [3], [0, 2]]
    with pytest.raises(ValueError, match="federated.clients=3000"):
        split_clients(LABELS, 3000, "iid", 0)
    with pytest.raises(ValueError, match="federated.split='label'"):
        split_clients(LABELS, 5, "label", 0)
