"""From an endpoint's validated body to the worker and back: the context check that every
generating endpoint shares, submitting requests to the engine (or the static batcher), and
waiting for their completions or their events while watching for a client that went away."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import Request as HTTPRequest

from lmjax.models.generator import Request
from lmjax.serve.batcher import Busy


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a request may ask of this server: the model's context, the most new tokens one
    request may ask for (--max_tokens), and the model id that OpenAI's clients name."""
    context: int
    max_tokens: int
    model_name: str


class Refused(Exception):
    """A request the server will not run, with its status and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def check_fit(generator, limits: Limits, prompt: str, new: int, field: str) -> tuple:
    """The prompt's token ids, once it is known that prompt + new tokens fit."""
    return fit_ids(limits, generator.encode_prompt(prompt).tolist(), new, field)


def fit_ids(limits: Limits, ids, new: int, field: str) -> tuple:
    """The token ids of a prompt, once it is known that they and `new` tokens fit."""
    n, block = len(ids), limits.context
    if n + new > block:
        raise Refused(422, f"the prompt is {n} tokens and {field} is {new}: together more "
                           f"than the model's context of {block} tokens; ask for at most "
                           f"{max(block - n, 0)} new tokens or shorten the prompt.", field,
                      "context_length_exceeded")
    if new > limits.max_tokens:
        raise Refused(422, f"{field} is {new}; this server allows at most {limits.max_tokens} "
                           "new tokens per request (its --max_tokens).", field)
    return tuple(int(i) for i in ids)


async def submit_and_wait(worker, requests: list[Request], http: HTTPRequest):
    """Runs requests to the end: their completions, or None if the client went away (the
    requests are then cancelled, which frees their slots at once). Raises `Busy`."""
    jobs = submit(worker, requests, stream=False)
    try:
        done = {}
        async for i, kind, value in merged(jobs, http):
            if kind == "error":
                raise RuntimeError(value)
            if kind == "done":
                done[i] = value
        return None if len(done) < len(jobs) else [done[i] for i in range(len(jobs))]
    finally:
        for job in jobs:
            job.cancel()  # no-op for finished ones


def submit(worker, requests: list[Request], stream: bool) -> list:
    """All the requests' jobs, or none: when the queue fills part-way (`Busy`), those
    already submitted are cancelled."""
    jobs = []
    try:
        for r in requests:
            jobs.append(worker.submit(r, stream=stream))
    except Busy:
        for job in jobs:
            job.cancel()
        raise
    return jobs


async def merged(jobs, http: HTTPRequest | None = None, poll_s: float = 0.25):
    """(job index, kind, value) events of several jobs as they come, until every job is done
    or failed; stops early when the client disconnects (checked every `poll_s` when idle)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def forward(i, job):
        while True:
            kind, value = await job.events.get()
            queue.put_nowait((i, kind, value))
            if kind != "text":
                return

    tasks = [asyncio.create_task(forward(i, j)) for i, j in enumerate(jobs)]
    try:
        left = len(jobs)
        while left:
            try:
                i, kind, value = await asyncio.wait_for(queue.get(), poll_s)
            except asyncio.TimeoutError:
                if http is not None and await http.is_disconnected():
                    return
                continue
            left -= kind != "text"
            yield i, kind, value
    finally:
        for t in tasks:
            t.cancel()
