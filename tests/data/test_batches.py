import numpy as np

from lmjax.data import batches

TOKENS = np.arange(10_000, dtype=np.uint16)


def test_batch_is_a_pure_function_of_seed_and_step():
    a = batches.train_batch(TOKENS, seed=3, step=17, batch_size=8, seq_len=32)
    b = batches.train_batch(TOKENS, seed=3, step=17, batch_size=8, seq_len=32)
    c = batches.train_batch(TOKENS, seed=3, step=18, batch_size=8, seq_len=32)
    d = batches.train_batch(TOKENS, seed=4, step=17, batch_size=8, seq_len=32)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])
    assert not np.array_equal(a["inputs"], d["inputs"])


def test_targets_are_inputs_shifted_by_one():
    b = batches.train_batch(TOKENS, seed=0, step=0, batch_size=4, seq_len=16)
    assert b["inputs"].shape == b["targets"].shape == (4, 16)
    assert b["inputs"].dtype == np.int32
    np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
    np.testing.assert_array_equal(b["targets"], b["inputs"] + 1)  # TOKENS is a ramp


def test_hosts_slices_make_up_the_global_batch():
    whole = batches.train_batch(TOKENS, seed=1, step=5, batch_size=8, seq_len=16)
    parts = [batches.train_batch(TOKENS, 1, 5, 8, 16, process_index=i, process_count=4)
             for i in range(4)]
    np.testing.assert_array_equal(np.concatenate([p["inputs"] for p in parts]), whole["inputs"])


def test_eval_examples_cover_the_split_without_overlap():
    starts = batches.eval_starts(1000, 64)
    assert starts[0] == 0 and np.all(np.diff(starts) == 64) and starts[-1] + 65 <= 1000
    few = batches.eval_starts(1000, 64, max_windows=4)
    assert len(few) == 4 and set(few) <= set(starts)
