"""Continuous batching over KV-cache slots: the server's default engine.

The engine holds one KV cache of `max_slots` rows, each the full context long, and runs a
loop on a thread of its own, in the manner of JetStream's prefill / insert / generate:

- **prefill** one waiting request alone: its prompt right-padded to a power-of-two bucket
  (16, 32, ... up to the context, so only a handful of programs compile), run through the
  model once; this samples its first token;
- **insert** that cache into a free row (slot) of the engine's cache;
- **generate** one token for every live slot in one jitted step (`decoding.step`); each slot
  has its own position (and, in a KV cache, its own next slot: `per_row`), sampling settings
  and random key, so a request's tokens do not depend on which requests share the step;
- on the host, each new token is appended to its request; a request that hits a stop string,
  end-of-text or max_new_tokens, or whose client went away, frees its slot at once, and a
  waiting request can take it before the next step.

Interleaving policy: before every generate step the engine admits waiting requests into free
slots until their prompts add up to `prefill_tokens` (at least one request per step). A burst
of short prompts then joins in one go (low time to first token), while a burst of long ones
stalls the running streams by at most about that many prompt tokens of compute per step
(bounded inter-token latency). docs/serving.md has the figures.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import threading
import time
import traceback

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.models import decoding as dec
from lmjax.models.generator import Completion, Generator, Request, pow2
from lmjax.serve.batcher import Busy, Job


@flax.struct.dataclass
class Slots:
    """The engine's device state: one row per slot."""
    cache: object           # the model's, one row per slot (a KV cache: index per row)
    last: jax.Array         # (slots,) each slot's newest token, not yet in the cache
    position: jax.Array     # (slots,) its position id
    sampling: dec.Sampling  # per slot; `offset` counts the slot's tokens so far


def empty_slots(model, max_slots: int) -> Slots:
    cache = model.init_cache(max_slots, model.cfg.block_size).per_row()
    zeros = lambda: jnp.zeros((max_slots,), jnp.int32)  # noqa: E731 (distinct: all donated)
    sampling = dec.Sampling(temperature=jnp.zeros((max_slots,)), top_k=zeros(),
                            top_p=jnp.ones((max_slots,)),
                            keys=jnp.zeros((max_slots, 2), jnp.uint32), offset=zeros())
    return Slots(cache=cache, last=zeros(), position=zeros(), sampling=sampling)


def sampling_for(request: Request) -> dec.Sampling:
    """One request's settings as a batch of one, in host arrays (no device work until the
    prefill that reads them). The key is `jax.random.PRNGKey(seed)`, the Generator's: same
    seed, same draws."""
    seed = request.seed % 2**64
    return dec.Sampling(temperature=np.full((1,), request.temperature, np.float32),
                        top_k=np.full((1,), request.top_k, np.int32),
                        top_p=np.full((1,), request.top_p, np.float32),
                        keys=np.array([[seed >> 32, seed & 0xFFFFFFFF]], np.uint32),
                        offset=np.zeros((1,), np.int32))


def prefill(model, params, tokens: np.ndarray, length: int, sampling: dec.Sampling):
    """One prompt, right-padded to (1, bucket): (its first new token (1,), its cache).
    Padding sits after the prompt, out of every real token's view; in a KV cache decoding
    overwrites it slot by slot."""
    return dec.prefill(model, params, tokens, np.zeros((1,), np.int32),
                       np.full((1,), length, np.int32), sampling, slots=tokens.shape[1])


@functools.partial(jax.jit, donate_argnums=(0,))
def insert(slots: Slots, cache, slot: jax.Array, length: jax.Array,
           first: jax.Array, sampling: dec.Sampling) -> Slots:
    """A prefilled request into row `slot`: its cache, its next position, its first token and
    its sampling settings (one token drawn already)."""
    put = lambda a, b: a.at[slot].set(b[0])  # noqa: E731
    s = jax.tree.map(put, slots.sampling, sampling.replace(offset=jnp.ones((1,), jnp.int32)))
    return Slots(cache=slots.cache.insert(cache, slot, length),
                 last=slots.last.at[slot].set(first[0]),
                 position=slots.position.at[slot].set(length), sampling=s)


@functools.partial(jax.jit, static_argnames=("model",), donate_argnums=(2,))
def generate(model, params, slots: Slots, live: jax.Array) -> tuple[Slots, jax.Array]:
    """One new token for every slot (free ones compute too, and are ignored): (slots, tokens
    (slots,)). A live slot's n-th token uses draw n of its own key, as in `Generator`."""
    chex.assert_shape(live, slots.last.shape)
    # Free slots sample greedily, so that a batch of greedy requests skips the vocabulary sort.
    # (They step too, in their own rows: an insert resets a row before it serves again.)
    sampling = slots.sampling.replace(temperature=jnp.where(live, slots.sampling.temperature, 0))
    nxt, cache = dec.step(model, params, slots.cache, slots.last, slots.position, sampling,
                          jnp.zeros((), jnp.int32))
    step = live.astype(jnp.int32)
    return Slots(cache=cache, last=jnp.where(live, nxt, slots.last),
                 position=slots.position + step,
                 sampling=slots.sampling.replace(offset=slots.sampling.offset + step)), nxt


def bucket(length: int, context: int) -> int:
    """Prompt lengths compile as 16, 32, 64, ... tokens, at most the context."""
    return min(max(16, pow2(length)), context)


@dataclasses.dataclass
class _Live:
    job: Job
    row: Completion
    hold: int        # characters a stream keeps back: they could still begin a stop string
    started: float   # when its first token was ready
    last_token: float


class Engine:
    """Requests in (`submit`), events out (each job's queue), one device loop in between.

    The same job interface as the static `Batcher`: ('text', delta) events, then ('done',
    Completion) or ('error', message). `submit` raises `Busy` when `max_queue` requests
    already wait for a slot.
    """

    def __init__(self, generator: Generator, metrics=None, max_slots: int = 16,
                 max_queue: int = 64, prefill_tokens: int = 512):
        self.generator, self.metrics = generator, metrics
        self.model, self.params = generator.model, generator.params
        self.context = generator.block_size
        self.max_slots, self.max_queue, self.prefill_tokens = max_slots, max_queue, prefill_tokens
        self.slots = empty_slots(self.model, max_slots)
        self.live: list[_Live | None] = [None] * max_slots
        self.waiting: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._out: list[tuple[Job, str, object]] = []  # events of this step, sent together
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="lmjax-engine", daemon=True)
        self._thread.start()

    # ---- the HTTP side -------------------------------------------------------------------

    def submit(self, request: Request, stream: bool = False) -> Job:
        """Queues a request; call from the event loop that will read the job's events."""
        job = Job(request, stream, asyncio.get_running_loop(), asyncio.Queue())
        with self._wake:
            if self._closing or not self._thread.is_alive():
                raise Busy(503, "the server is shutting down or its engine stopped")
            if len(self.waiting) >= self.max_queue:
                raise Busy(429, f"{len(self.waiting)} requests are already waiting (the queue "
                                "limit); retry shortly")
            self.waiting.append(job)
            self._wake.notify()
        self._gauges()
        return job

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def live_count(self) -> int:
        return sum(s is not None for s in self.live)

    # ---- the device loop -----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self.waiting and not self.live_count():
                    self._wake.wait()
                if self._closing:
                    break
            try:
                self._admit()
                if self.live_count():
                    self._step()
                self._flush()
            except Exception as e:  # one bad step must not take the server down
                self._flush()
                traceback.print_exc()
                for i, s in enumerate(self.live):
                    if s is not None:
                        s.job.emit("error", f"generation failed: {type(e).__name__}: {e}")
                        self.live[i] = None
                self.slots = empty_slots(self.model, self.max_slots)
        for s in self.live:
            if s is not None:
                s.job.emit("error", "the server is shutting down")
        for job in self.waiting:
            job.emit("error", "the server is shutting down")

    def _admit(self) -> None:
        """Waiting requests into free slots, up to `prefill_tokens` prompt tokens per step."""
        budget = self.prefill_tokens
        while budget > 0 and None in self.live:
            with self._wake:
                if not self.waiting:
                    return
                job = self.waiting.popleft()
            if job.cancelled:
                continue
            ids = self.generator.prompt(job.request)
            budget -= len(ids)
            try:
                self._prefill_insert(job, ids, self.live.index(None))
            except Exception as e:
                self._emit(job, "error", f"generation failed: {type(e).__name__}: {e}")
                raise
        self._gauges()

    def _prefill_insert(self, job: Job, ids: np.ndarray, slot: int) -> None:
        r = job.request
        if not 0 < len(ids) < self.context or len(ids) + r.max_new_tokens > self.context:
            self._emit(job, "error", f"the prompt ({len(ids)} tokens) plus max_new_tokens "
                                     f"({r.max_new_tokens}) must fit the context of "
                                     f"{self.context}")
            return
        t = time.perf_counter()
        size = bucket(len(ids), self.context)
        tokens = np.zeros((1, size), np.int32)
        tokens[0, :len(ids)] = ids
        length = np.int32(len(ids))
        sampling = sampling_for(r)
        first, cache = prefill(self.model, self.params, tokens, length, sampling)
        self.slots = insert(self.slots, cache, np.int32(slot), length, first, sampling)
        token = int(np.asarray(first)[0])
        now = time.perf_counter()
        holds = [len(s) - 1 for s in self.generator.stops(r)]
        live = _Live(job, Completion(text="", tokens=[]), max(holds + [0]), now, now)
        self.live[slot] = live
        if self.metrics:
            self.metrics.prefill_seconds.set(now - t)
            self.metrics.first_token.observe(now - job.submitted)
        self._absorb(slot, token, now)

    def _step(self) -> None:
        live = np.array([s is not None for s in self.live])
        t = time.perf_counter()
        self.slots, tokens = generate(self.model, self.params, self.slots, live)
        tokens = np.asarray(tokens)
        now = time.perf_counter()
        for slot in np.flatnonzero(live):
            self._absorb(int(slot), int(tokens[slot]), now)
        if self.metrics:
            n = int(live.sum())
            self.metrics.decode_seconds.set(now - t)
            self.metrics.tokens_per_second.set(n / max(now - t, 1e-9))
            self.metrics.step_slots.observe(n)
            self._gauges()

    def _absorb(self, slot: int, token: int, now: float) -> None:
        """One new token for the request in `slot`; frees the slot when the request ends."""
        s = self.live[slot]
        if s.job.cancelled:  # the client went away: its slot is free for the next request
            s.row.finish_reason = "cancelled"
            if self.metrics:
                self.metrics.cancelled.inc()
            self._finish(slot)
            return
        if s.row.tokens and self.metrics:
            self.metrics.inter_token.observe(now - s.last_token)
        s.last_token = now
        self.generator.extend(s.row, s.job.request, [token])
        if self.metrics:
            self.metrics.tokens.inc()
        if s.job.stream:
            delta = s.row.take_new(s.hold)
            if delta:
                self._emit(s.job, "text", delta)
        if s.row.finish_reason is not None:
            self._finish(slot)

    def _finish(self, slot: int) -> None:
        s = self.live[slot]
        self.live[slot] = None
        if s.job.stream:
            rest = s.row.take_new()
            if rest:
                self._emit(s.job, "text", rest)
        self._emit(s.job, "done", s.row)

    def _emit(self, job: Job, kind: str, value) -> None:
        self._out.append((job, kind, value))

    def _flush(self) -> None:
        """Hands the step's events to their event loops, one wake-up per loop (not per
        token: with many slots the wake-ups would cost more than the step)."""
        by_loop: dict = {}
        for job, kind, value in self._out:
            by_loop.setdefault(job.loop, []).append((job, kind, value))
        self._out = []
        for loop, events in by_loop.items():
            loop.call_soon_threadsafe(_deliver, events)

    def _gauges(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self.waiting))
            self.metrics.live_slots.set(self.live_count())


def _deliver(events) -> None:
    for job, kind, value in events:
        job.events.put_nowait((kind, value))


def warm_up(engine: Engine, log=print) -> None:
    """Compiles the prefill and insert programs of every prompt bucket and the generate step."""
    t, size = time.perf_counter(), 16
    model, params = engine.model, engine.params
    while True:
        size = bucket(size, engine.context)
        sampling = sampling_for(Request("", temperature=0.5))
        first, cache = prefill(model, params, np.zeros((1, size), np.int32), np.int32(1),
                               sampling)
        slots = insert(empty_slots(model, engine.max_slots), cache, np.int32(0),
                       np.int32(1), first, sampling)
        if size >= engine.context:
            break
        size *= 2
    live = np.ones((engine.max_slots,), bool)
    jax.block_until_ready(generate(model, params, slots, live))
    log(f"Compiled the engine ({engine.max_slots} slots, prompt buckets up to "
        f"{engine.context}) in {time.perf_counter() - t:.1f}s")
