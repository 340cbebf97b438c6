"""Training batches made and placed on the devices ahead of the step that needs them.

A background thread builds step i+1, i+2, ... (host gather, tokenisation, transfer) while the
devices run step i, so on an accelerator the step never waits for the input pipeline. Batches
are pure functions of the step, so prefetching changes nothing but timing: the same run with
`data.prefetch=0` sees the same batches in the same order.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

_DONE = object()


class Prefetcher:
    """Iterates `(step, make(step))` for step in [start, stop), `depth` batches ahead.

    An error in `make` is raised in the consuming thread at the step that failed. Use it as a
    context manager so that a loop left early (early stopping, an exception) stops the thread.
    """

    def __init__(self, make: Callable[[int], object], start: int, stop: int, depth: int = 2):
        if depth < 0:
            raise ValueError(f"data.prefetch={depth}: batches to build ahead, >= 0 (0: none).")
        self._make, self._start, self._stop, self._depth = make, start, stop, depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, item) -> bool:
        """Waits for room in the queue; False if the consumer has gone (close was called)."""
        while not self._halt.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        for step in range(self._start, self._stop):
            try:
                item = (step, self._make(step), None)
            except BaseException as e:  # handed to the consumer, raised there
                item = (step, None, e)
            if not self._put(item) or item[2] is not None:
                return
        self._put((None, _DONE, None))

    def __iter__(self) -> Iterator[tuple[int, object]]:
        if self._depth == 0:  # synchronous: build each batch when it is asked for
            for step in range(self._start, self._stop):
                yield step, self._make(step)
            return
        self._thread = threading.Thread(target=self._fill, name="lmjax-prefetch", daemon=True)
        self._thread.start()
        while True:
            step, batch, error = self._queue.get()
            if error is not None:
                raise error
            if batch is _DONE:
                return
            yield step, batch

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
