"""OpenAI's API for a GPT: POST /v1/completions (JSON or streamed chunks), GET /v1/models and
/v1/models/{id}. Errors are in OpenAI's shape (lmjax/serve/middleware.py), so that the `openai`
package and harnesses built on it raise their own error types."""

from __future__ import annotations

import json
import secrets
import time
import uuid

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from lmjax.models.generator import Request
from lmjax.serve.batcher import Busy
from lmjax.serve.jobs import Limits, Refused, check_fit, merged, submit, submit_and_wait
from lmjax.serve.middleware import openai_error
from lmjax.serve.schemas import CompletionBody


def add_openai_routes(app: FastAPI, generator, source: str, worker,
                      limits: Limits) -> None:
    """OpenAI's endpoints for a GPT served by `worker`. A route added here must start with
    one of middleware.OPENAI_PATHS, so that its errors are in OpenAI's shape."""
    created = int(time.time())

    def model_card():
        return {"id": limits.model_name, "object": "model", "created": created,
                "owned_by": "lmjax", "context_length": limits.context, "source": source}

    @app.get("/v1/models", summary="OpenAI: the model served")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", summary="OpenAI: one model")
    async def one_model(name: str):
        if name != limits.model_name:
            return openai_error(404, f"The model '{name}' does not exist; this server has "
                                     f"'{limits.model_name}'.", "model", "model_not_found")
        return model_card()

    @app.post("/v1/completions", summary="OpenAI: complete prompts (streamed with stream=true)",
              responses={400: {"description": "invalid request (OpenAI's error shape)"},
                         404: {"description": "unknown model"},
                         429: {"description": "the queue is full"}})
    async def completions(body: CompletionBody, http: HTTPRequest):
        try:
            requests, prompt_tokens = _completion_requests(generator, limits, body)
        except Refused as e:
            return openai_error(400 if e.status == 422 else e.status, str(e), e.param, e.code)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": limits.model_name}
        try:
            if body.stream:
                jobs = submit(worker, requests, stream=True)
                usage = body.stream_options is not None and body.stream_options.include_usage
                return StreamingResponse(
                    _completion_events(jobs, head, prompt_tokens, usage),
                    media_type="text/event-stream",
                    background=BackgroundTask(lambda: [j.cancel() for j in jobs]))
            rows = await submit_and_wait(worker, requests, http)
        except Busy as e:
            return openai_error(e.status, str(e), None, "rate_limit_exceeded"
                                if e.status == 429 else "server_unavailable")
        except RuntimeError as e:
            return openai_error(500, str(e))
        if rows is None:
            return openai_error(499, "the client went away")
        completion_tokens = sum(len(r.tokens) for r in rows)
        return {**head, "choices": [{"index": i, "text": r.text, "logprobs": None,
                                     "finish_reason": r.finish_reason}
                                    for i, r in enumerate(rows)],
                "usage": {"prompt_tokens": prompt_tokens,
                          "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


def _completion_requests(generator, limits: Limits, body: CompletionBody):
    """The engine's requests for a completion body (n per prompt), and the prompt tokens."""
    if body.model != limits.model_name:
        raise Refused(404, f"The model '{body.model}' does not exist; this server has "
                           f"'{limits.model_name}' (GET /v1/models).", "model",
                      "model_not_found")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or any(p == "" for p in prompts) or len(prompts) > 16:
        raise Refused(400, "prompt: give 1 to 16 non-empty strings.", "prompt")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if any(s == "" for s in stops):
        raise Refused(400, "stop: empty strings are not allowed.", "stop")
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    requests, prompt_tokens = [], 0
    for prompt in prompts:
        ids = check_fit(generator, limits, prompt, body.max_tokens, "max_tokens")
        prompt_tokens += len(ids)
        for j in range(body.n):
            requests.append(Request(prompt=prompt, max_new_tokens=body.max_tokens,
                                    temperature=body.temperature, top_k=body.top_k,
                                    top_p=body.top_p, seed=(seed + j) % 2**32,
                                    stop=tuple(stops), prompt_ids=ids))
    return requests, prompt_tokens


async def _completion_events(jobs, head: dict, prompt_tokens: int, usage: bool):
    """OpenAI's streamed completion: one chunk per piece of text (choice `index`), a chunk
    with each choice's finish_reason, optionally the usage, then [DONE]."""
    tokens = 0
    try:
        async for i, kind, value in merged(jobs):
            if kind == "error":
                error = {"error": {"message": value, "type": "server_error"}}
                yield f"data: {json.dumps(error)}\n\n"
                return
            text, finish = (value, None) if kind == "text" else ("", value.finish_reason)
            if kind == "done":
                tokens += len(value.tokens)
            chunk = {**head, "choices": [{"index": i, "text": text, "logprobs": None,
                                          "finish_reason": finish}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        if usage:
            yield "data: " + json.dumps({**head, "choices": [], "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                "total_tokens": prompt_tokens + tokens}}) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancel()  # the client went away mid-stream: free the slots now
