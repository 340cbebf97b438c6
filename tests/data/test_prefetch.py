import threading
import time

import pytest

from lmjax.data.prefetch import Prefetcher


def test_same_batches_in_order_as_without_prefetching():
    make = lambda step: {"x": step * 10}
    for depth in (0, 1, 3):
        with Prefetcher(make, 5, 12, depth) as batches:
            assert list(batches) == [(s, {"x": s * 10}) for s in range(5, 12)]


def test_builds_at_most_depth_ahead_of_the_consumer():
    built = []

    def make(step):
        built.append(step)
        return step

    with Prefetcher(make, 0, 100, depth=2) as batches:
        for step, _ in batches:
            time.sleep(0.05)  # a slow step: the thread fills the queue and waits
            # depth batches queued plus the one being handed over or built
            assert max(built) <= step + 3
            if step == 5:
                break


def test_an_error_is_raised_at_the_step_that_failed():
    def make(step):
        if step == 3:
            raise OSError("disk gone")
        return step

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        with Prefetcher(make, 0, 10, depth=2) as batches:
            for step, _ in batches:
                seen.append(step)
    assert seen == [0, 1, 2]


def test_leaving_early_stops_the_thread():
    before = threading.active_count()
    with Prefetcher(lambda s: s, 0, 10**6, depth=2) as batches:
        for step, _ in batches:
            if step == 2:
                break
    assert threading.active_count() == before


def test_negative_depth_is_refused():
    with pytest.raises(ValueError, match="data.prefetch"):
        Prefetcher(lambda s: s, 0, 1, depth=-1)


def test_leaving_after_the_last_batch_was_built_does_not_hang():
    # The thread has built everything and waits to hand over the end marker on a full queue.
    with Prefetcher(lambda s: s, 0, 4, depth=2) as batches:
        for step, _ in batches:
            time.sleep(0.1)
            if step == 1:
                break
