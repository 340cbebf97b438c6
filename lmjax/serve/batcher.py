"""Batching concurrent requests onto the device: one worker thread, one queue.

Requests wait in a queue. The worker takes the first, collects whatever else arrives within
`max_wait_s` (up to `max_batch`), and runs them as one left-padded batch; requests that arrive
while a batch runs form the next one. Results go back to each request's asyncio queue as
events: ('text', delta), then ('done', Completion) or ('error', message).
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
import traceback

from lmjax.models.generator import Completion, Generator, Request


@dataclasses.dataclass
class Job:
    request: Request
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the HTTP side when the client goes away

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, kind: str, value) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Busy(Exception):
    """A request refused for now: 429 (the queue is full) or 503 (shutting down)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Batcher:
    """The static batcher: kept for comparison (`--engine=static`); the server's default is
    the slot engine (lmjax/serve/engine.py)."""

    def __init__(self, generator: Generator, metrics=None, max_batch: int = 32,
                 max_wait_s: float = 0.005, stream_chunk: int = 1, max_queue: int = 1 << 30):
        self.generator, self.metrics, self.max_queue = generator, metrics, max_queue
        self.max_batch, self.max_wait_s, self.stream_chunk = max_batch, max_wait_s, stream_chunk
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="lmjax-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: Request, stream: bool = False) -> Job:
        """Queues a request; call from the event loop that will read the job's events."""
        if not self._thread.is_alive():
            raise Busy(503, "the batcher stopped")
        if self._queue.qsize() >= self.max_queue:
            raise Busy(429, f"{self._queue.qsize()} requests are already waiting (the queue "
                            "limit); retry shortly")
        job = Job(request, stream, asyncio.get_running_loop(), asyncio.Queue())
        self._queue.put(job)
        if self.metrics:
            self.metrics.queue_depth.set(self._queue.qsize())
        return job

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next_batch(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs, deadline = [first], time.perf_counter() + self.max_wait_s
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.perf_counter(), 0))
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch first
                self._queue.put(None)
                break
            jobs.append(job)
        return jobs

    def _work(self) -> None:
        while True:
            jobs = self._next_batch()
            if jobs is None:
                return
            try:
                self._run(jobs)
            except Exception as e:  # one bad batch must not take the server down
                traceback.print_exc()
                for job in jobs:
                    job.emit("error", f"generation failed: {type(e).__name__}: {e}")

    def _run(self, jobs: list[Job]) -> None:
        requests = [j.request for j in jobs]
        streaming = any(j.stream for j in jobs)
        # Streams hold back text that could still become a stop string.
        holds = [max([len(s) for s in r.stop] + [len(self.generator.eot or "")]) - 1
                 for r in requests]
        t = time.perf_counter()
        first_seen = [False] * len(jobs)
        rows: list[Completion] = []
        for rows in self.generator.stream(requests, chunk=self.stream_chunk if streaming else 0):
            now = time.perf_counter()
            for i, (job, row) in enumerate(zip(jobs, rows)):
                if row.tokens and not first_seen[i]:
                    first_seen[i] = True
                    if self.metrics:
                        self.metrics.first_token.observe(now - job.submitted)
                if job.stream:
                    delta = row.take_new(max(holds[i], 0))
                    if delta:
                        job.emit("text", delta)
        seconds = time.perf_counter() - t
        for job, row in zip(jobs, rows):
            if job.stream:
                rest = row.take_new()
                if rest:
                    job.emit("text", rest)
            job.emit("done", row)
        if self.metrics:
            tokens = sum(len(r.tokens) for r in rows)
            self.metrics.tokens.inc(tokens)
            self.metrics.batch_size.observe(len(jobs))
            self.metrics.tokens_per_second.set(tokens / max(seconds, 1e-9))
            self.metrics.queue_depth.set(self._queue.qsize())


def warm_up(generator, max_batch: int, log=print) -> None:
    """Compiles short-prompt programs for every batch size the batcher can form."""
    t, size = time.perf_counter(), 1
    while size <= max_batch:
        generator.generate([Request("\n", max_new_tokens=2)] * size)
        size *= 2
    log(f"Compiled batch sizes 1..{max_batch} in {time.perf_counter() - t:.1f}s")
