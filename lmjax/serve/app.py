"""The HTTP API (FastAPI): OpenAI-compatible completions and models, generate (JSON or
server-sent events) for a GPT, classify for a BERT text classifier, health, Prometheus metrics,
and the playground page at /.

Every error response of the lmjax endpoints has the body {"error": "<one readable line>"}:
malformed JSON or a body that is not UTF-8 (400), wrong or missing fields, NaN or infinite
numbers and prompts that do not fit the context (422), bodies over the limit, with or without a
Content-Length (413), unknown paths (404) and methods (405), a full queue (429), a stopped
engine (503), a failure inside the server (500). The OpenAI endpoints (/v1/completions,
/v1/models) answer in OpenAI's shape instead, {"error": {"message", "type", "param", "code"}},
with 400 for every invalid request, as OpenAI's own API does. Interactive docs are at /docs,
the schema at /openapi.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               CONTENT_TYPE_LATEST, generate_latest)
from pydantic import BaseModel, ConfigDict, Field

from lmjax.data.sft import format_prompt
from lmjax.infer.generator import Generator, Request
from lmjax.serve.batcher import Batcher, Busy
from lmjax.serve.engine import Engine


class GenerateBody(BaseModel):
    # Strict: "max_new_tokens": "20" is an error, not silently converted. Python's JSON parser
    # reads NaN and Infinity, which would otherwise fail only a range check, confusingly.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    prompt: Annotated[str, Field(min_length=1, description="Text to continue.")]
    max_new_tokens: Annotated[int, Field(ge=1, description="Tokens to generate; prompt plus "
                                         "these must fit the model's context.")] = 100
    temperature: Annotated[float, Field(ge=0, le=100, description="0: greedy.")] = 0.0
    top_k: Annotated[int, Field(ge=0, description="0: no top-k cut.")] = 0
    top_p: Annotated[float, Field(gt=0, le=1, description="1: no nucleus cut.")] = 1.0
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    stop: Annotated[list[str], Field(max_length=4, description="Up to 4 stop strings; the "
                                     "text ends before the first one generated.")] = []
    stream: Annotated[bool, Field(description="Server-sent events: one per new piece of "
                                  "text, then one with the finish reason.")] = False


class ClassifyBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    texts: Annotated[list[Annotated[str, Field(min_length=1)]],
                     Field(min_length=1, max_length=64, description="1 to 64 texts; longer "
                           "ones are truncated to the model's context.")]
    return_attention: bool = Field(False, description="Also return, per text, how much [CLS] "
                                   "attends to each token: the attention rollout and the last "
                                   "layer's map (mean over heads).")


class Attention(BaseModel):
    tokens: list[str]
    rollout: list[float]
    last_layer: list[float]


class Classification(BaseModel):
    label: str
    probabilities: dict[str, float]
    truncated: bool
    attention: Attention | None = None


class ClassifyResponse(BaseModel):
    results: list[Classification]


class GenerateResponse(BaseModel):
    text: str
    tokens: int
    finish_reason: str
    seconds: float


class QABody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    question: Annotated[str, Field(min_length=1, description="The question, as the SFT run's "
                                   "template puts it after 'Question: '.")]
    max_new_tokens: Annotated[int, Field(ge=1, description="Most answer tokens.")] = 32


class QAResponse(BaseModel):
    answer: str
    tokens: int
    finish_reason: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class QA:
    """An SFT run's answer format: the prompt template (ending in '{response}') and the stop
    strings that end an answer (its config's sft.template and sft.stop)."""
    template: str
    stop: tuple[str, ...]


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("lmjax_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram("lmjax_request_seconds", "Request latency", ["path"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.tokens = Counter("lmjax_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_second = Gauge("lmjax_tokens_per_second",
                                       "Generated tokens/s of the last batch", registry=r)
        self.first_token = Histogram("lmjax_time_to_first_token_seconds",
                                     "From arrival to the first generated token", registry=r)
        self.batch_size = Histogram("lmjax_batch_size", "Requests per device batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue_depth = Gauge("lmjax_queue_depth", "Requests waiting for the device",
                                 registry=r)
        # The slot engine's (lmjax/serve/engine.py).
        self.live_slots = Gauge("lmjax_live_slots", "KV-cache slots holding a request",
                                registry=r)
        self.prefill_seconds = Gauge("lmjax_prefill_seconds",
                                     "Seconds of the last prefill (with insert)", registry=r)
        self.decode_seconds = Gauge("lmjax_decode_step_seconds",
                                    "Seconds of the last generate step over all slots",
                                    registry=r)
        self.inter_token = Histogram("lmjax_inter_token_latency_seconds",
                                     "Between a request's consecutive tokens", registry=r,
                                     buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                              2.5))
        self.step_slots = Histogram("lmjax_step_slots", "Live slots per generate step",
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.cancelled = Counter("lmjax_cancelled_requests",
                                 "Requests whose client went away before the end", registry=r)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


OPENAI_PATHS = ("/v1/completions", "/v1/models")
_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error",
                 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error", 503: "server_overloaded", 500: "server_error"}


def _openai_error(status: int, message: str, param: str | None = None,
                  code: str | None = None) -> JSONResponse:
    """OpenAI's error body: its clients raise their own error type from the status and read
    the message from here."""
    return JSONResponse({"error": {"message": message, "type": _OPENAI_TYPES.get(
        status, "invalid_request_error"), "param": param, "code": code}}, status_code=status)


def _error_for(path: str, status: int, message: str) -> JSONResponse:
    """The error shape of the endpoint asked: OpenAI's under its paths (where every invalid
    request is a 400), lmjax's elsewhere."""
    if path.startswith(OPENAI_PATHS):
        return _openai_error(400 if status == 422 else status, message)
    return _error(status, message)


class BodyLimit:
    """Reads the whole request body before the app sees it: over `max_bytes` (declared or
    streamed in chunks) is 413, bytes that are not UTF-8 are 400, each as {"error": ...}.
    (Raising from inside the app's own body read would reach FastAPI's parser, which turns
    any error into a generic 400.)"""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        too_large = _error_for(path, 413, f"request body over {self.max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await _error_for(path, 400, f"the request body is not UTF-8 (byte "
                                    f"{e.start}); JSON must be UTF-8")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. a streaming response waiting for a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class Count:
    """Requests by path and status, and their latency: plain ASGI (Starlette's
    BaseHTTPMiddleware would hide a client's disconnect from a streaming response)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in _PATHS else "other"
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - t)


def create_app(generator: Generator | None = None, *, classifier=None, source: str = "",
               model_name: str = "lmjax", engine: str = "slots", max_slots: int = 16,
               max_queue: int = 64, max_tokens: int = 0, prefill_tokens: int = 512,
               max_batch: int = 32, max_wait_s: float = 0.005, stream_chunk: int = 1,
               max_body_bytes: int = 64 * 1024, qa: QA | None = None) -> FastAPI:
    """The API for a `Generator` (OpenAI's /v1/completions and /v1/models, POST /v1/generate)
    or a `TextClassifier` (POST /v1/classify).

    engine: 'slots' (continuous batching over `max_slots` KV-cache slots, the default) or
    'static' (the batcher that runs whole batches of up to `max_batch`, for comparison).
    At most `max_queue` requests wait for the device (429 beyond); `max_tokens` > 0 caps the
    new tokens one request may ask for. `model_name` is the id /v1/models lists. With `qa` (an
    SFT run's template and stop strings), POST /v1/qa answers questions greedily.
    """
    if (generator is None) == (classifier is None):
        raise ValueError("give a generator or a classifier")
    if engine not in ("slots", "static"):
        raise ValueError(f"engine={engine!r}: use 'slots' or 'static'")
    metrics = Metrics()
    what = "Text generation" if generator is not None else "Text classification"
    app = FastAPI(title="lmjax", description=f"{what} with {source or 'an lmjax model'}.",
                  version="1")
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HTTPRequest, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = errors[0].get("ctx", {}).get("error", "")
            return _error_for(request.url.path, 400,
                              f"malformed JSON{': ' + str(ctx) if ctx else ''}")
        parts = []
        for e in errors:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            extra = f", not {e['input']}" if e.get("type") == "finite_number" else ""
            parts.append(f"{where}: {e.get('msg')}{extra}")
        return _error_for(request.url.path, 422, "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def http_error(request: HTTPRequest, exc: HTTPException):
        # 404, 405 and the like: the same shape as every other error.
        response = _error_for(request.url.path, exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def server_error(request: HTTPRequest, exc: Exception):
        return _error_for(request.url.path, 500, f"internal server error: "
                                                 f"{type(exc).__name__}")

    app.add_middleware(Count, metrics=metrics)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, summary="The playground page")
    async def playground():
        page = importlib.resources.files("lmjax.serve") / "static" / "index.html"
        return HTMLResponse(page.read_text(encoding="utf-8"))

    if classifier is not None:
        _classify_routes(app, classifier, source)
    else:
        if engine == "slots":
            worker = Engine(generator, metrics, max_slots=max_slots, max_queue=max_queue,
                            prefill_tokens=prefill_tokens)
        else:
            worker = Batcher(generator, metrics, max_batch=max_batch, max_wait_s=max_wait_s,
                             stream_chunk=stream_chunk, max_queue=max_queue)
        app.state.engine = worker
        app.router.on_shutdown.append(worker.close)
        limits = _Limits(generator.block_size, max_tokens or generator.block_size, model_name)
        _generate_routes(app, generator, source, worker, limits)
        _openai_routes(app, generator, source, worker, metrics, limits)
        if qa is not None:
            _qa_route(app, generator, worker, limits, qa)
    return app


def _classify_routes(app: FastAPI, classifier, source: str) -> None:
    @app.get("/health", summary="Liveness: the model is loaded")
    async def health():
        return {"status": "ok", "model": source, "context": classifier.seq_len,
                "classes": classifier.class_names, "task": "classify"}

    @app.post("/v1/classify", response_model=ClassifyResponse, response_model_exclude_none=True,
              responses={400: {"description": "malformed JSON"},
                         413: {"description": "body too large"},
                         422: {"description": "invalid fields"}},
              summary="Classify texts with the BERT classifier")
    def classify(body: ClassifyBody):  # plain def: runs in the thread pool, off the event loop
        return ClassifyResponse(results=classifier.classify(body.texts, body.return_attention))


class _Limits:
    def __init__(self, context: int, max_tokens: int, model_name: str):
        self.context, self.max_tokens, self.model_name = context, max_tokens, model_name


class Refused(Exception):
    """A request the server will not run, with its status and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def _check_fit(generator, limits: _Limits, prompt: str, new: int, field: str) -> tuple:
    """The prompt's token ids, once it is known that prompt + new tokens fit."""
    ids = generator.encode(prompt)
    n, block = len(ids), limits.context
    if n + new > block:
        raise Refused(422, f"the prompt is {n} tokens and {field} is {new}: together more "
                           f"than the model's context of {block} tokens; ask for at most "
                           f"{max(block - n, 0)} new tokens or shorten the prompt.", field,
                      "context_length_exceeded")
    if new > limits.max_tokens:
        raise Refused(422, f"{field} is {new}; this server allows at most {limits.max_tokens} "
                           "new tokens per request (its --max_tokens).", field)
    return tuple(ids.tolist())


async def submit_and_wait(worker, requests: list[Request], http: HTTPRequest):
    """Runs requests to the end: their completions, or None if the client went away (the
    requests are then cancelled, which frees their slots at once). Raises `Busy`."""
    jobs = _submit(worker, requests, stream=False)
    try:
        done = {}
        async for i, kind, value in _merged(jobs, http):
            if kind == "error":
                raise RuntimeError(value)
            if kind == "done":
                done[i] = value
        return None if len(done) < len(jobs) else [done[i] for i in range(len(jobs))]
    finally:
        for job in jobs:
            job.cancel()  # no-op for finished ones


def _submit(worker, requests, stream: bool):
    jobs = []
    try:
        for r in requests:
            jobs.append(worker.submit(r, stream=stream))
    except Busy:
        for job in jobs:
            job.cancel()
        raise
    return jobs


async def _merged(jobs, http: HTTPRequest | None = None, poll_s: float = 0.25):
    """(job index, kind, value) events of several jobs as they come, until every job is done
    or failed; stops early when the client disconnects (checked every `poll_s` when idle)."""
    merged: asyncio.Queue = asyncio.Queue()

    async def forward(i, job):
        while True:
            kind, value = await job.events.get()
            merged.put_nowait((i, kind, value))
            if kind != "text":
                return

    tasks = [asyncio.create_task(forward(i, j)) for i, j in enumerate(jobs)]
    try:
        left = len(jobs)
        while left:
            try:
                i, kind, value = await asyncio.wait_for(merged.get(), poll_s)
            except asyncio.TimeoutError:
                if http is not None and await http.is_disconnected():
                    return
                continue
            left -= kind != "text"
            yield i, kind, value
    finally:
        for t in tasks:
            t.cancel()


def _generate_routes(app, generator, source, worker, limits: _Limits):
    @app.get("/health", summary="Liveness: the model is loaded and the engine is running")
    async def health():
        alive = worker.alive()
        return JSONResponse({"status": "ok" if alive else "engine stopped", "model": source,
                             "id": limits.model_name, "context": limits.context,
                             "task": "generate"}, status_code=200 if alive else 503)

    @app.post("/v1/generate", response_model=GenerateResponse,
              responses={400: {"description": "malformed JSON"},
                         413: {"description": "body too large"},
                         422: {"description": "invalid fields, or prompt + max_new_tokens "
                                              "beyond the context"},
                         429: {"description": "the queue is full"}},
              summary="Continue a prompt (optionally streamed as server-sent events)")
    async def generate(body: GenerateBody, http: HTTPRequest):
        try:
            ids = _check_fit(generator, limits, body.prompt, body.max_new_tokens,
                             "max_new_tokens")
        except Refused as e:
            return _error(e.status, str(e))
        if any(s == "" for s in body.stop):
            return _error(422, "stop: empty strings are not allowed.")
        request = Request(prompt=body.prompt, max_new_tokens=body.max_new_tokens,
                          temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                          seed=body.seed, stop=tuple(body.stop), prompt_ids=ids)
        t = time.perf_counter()
        try:
            if body.stream:
                job = worker.submit(request, stream=True)
                return StreamingResponse(_events(job, t), media_type="text/event-stream",
                                         background=BackgroundTask(job.cancel))
            rows = await _one(worker, request, http)
        except Busy as e:
            return _error(e.status, str(e))
        if isinstance(rows, JSONResponse):
            return rows
        return GenerateResponse(text=rows[0].text, tokens=len(rows[0].tokens),
                                finish_reason=rows[0].finish_reason,
                                seconds=time.perf_counter() - t)


async def _one(worker, request: Request, http: HTTPRequest):
    """One request run to the end: its completions, or the error response to send."""
    try:
        rows = await submit_and_wait(worker, [request], http)
    except Busy as e:
        return _error(e.status, str(e))
    except RuntimeError as e:
        return _error(500, str(e))
    return _error(499, "the client went away") if rows is None else rows


def _qa_route(app, generator, worker, limits: _Limits, qa: QA):
    @app.post("/v1/qa", response_model=QAResponse,
              responses={422: {"description": "invalid fields, or the question and answer do "
                                              "not fit the context"},
                         429: {"description": "the queue is full"}},
              summary="Answer a question with the SFT run's template (greedy, its stop strings)")
    async def answer(body: QABody, http: HTTPRequest):
        prompt = format_prompt(qa.template, body.question)
        try:
            ids = _check_fit(generator, limits, prompt, body.max_new_tokens, "max_new_tokens")
        except Refused as e:
            return _error(e.status, str(e))
        request = Request(prompt=prompt, max_new_tokens=body.max_new_tokens, temperature=0.0,
                          stop=qa.stop, prompt_ids=ids)
        t = time.perf_counter()
        rows = await _one(worker, request, http)
        if isinstance(rows, JSONResponse):
            return rows
        return QAResponse(answer=rows[0].text.strip(), tokens=len(rows[0].tokens),
                          finish_reason=rows[0].finish_reason,
                          seconds=time.perf_counter() - t)


def _openai_routes(app, generator, source, worker, metrics, limits: _Limits):
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
            return _openai_error(404, f"The model '{name}' does not exist; this server has "
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
            return _openai_error(400 if e.status == 422 else e.status, str(e), e.param, e.code)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": limits.model_name}
        try:
            if body.stream:
                jobs = _submit(worker, requests, stream=True)
                usage = body.stream_options is not None and body.stream_options.include_usage
                return StreamingResponse(
                    _completion_events(jobs, head, prompt_tokens, usage),
                    media_type="text/event-stream",
                    background=BackgroundTask(lambda: [j.cancel() for j in jobs]))
            rows = await submit_and_wait(worker, requests, http)
        except Busy as e:
            return _openai_error(e.status, str(e), None, "rate_limit_exceeded"
                                 if e.status == 429 else "server_unavailable")
        except RuntimeError as e:
            return _openai_error(500, str(e))
        if rows is None:
            return _openai_error(499, "the client went away")
        completion_tokens = sum(len(r.tokens) for r in rows)
        return {**head, "choices": [{"index": i, "text": r.text, "logprobs": None,
                                     "finish_reason": r.finish_reason}
                                    for i, r in enumerate(rows)],
                "usage": {"prompt_tokens": prompt_tokens,
                          "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool = False


class CompletionBody(BaseModel):
    """OpenAI's completion request: the fields lmjax acts on, and the common ones it accepts
    only at their no-op values (a harness that sends them still works)."""
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    model: str
    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1)] = 16
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0, description="(not OpenAI's; vLLM's) 0: off")] = 0
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    echo: Literal[False] = False
    logprobs: Literal[0] | None = None
    best_of: Literal[1] | None = None
    frequency_penalty: Literal[0] = 0
    presence_penalty: Literal[0] = 0
    suffix: None = None


def _completion_requests(generator, limits: _Limits, body: CompletionBody):
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
        ids = _check_fit(generator, limits, prompt, body.max_tokens, "max_tokens")
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
        async for i, kind, value in _merged(jobs):
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


_PATHS = {"/v1/generate", "/v1/classify", "/v1/completions", "/v1/models", "/health",
          "/metrics", "/docs", "/openapi.json", "/"}


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, timeout_s: float = 60) -> Iterator[str]:
    """Runs the app with uvicorn on a free localhost port in a thread; yields its base URL
    (for tests and benchmarks: the real server, without a second process)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout_s
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def _events(job, t0: float):
    """Server-sent events: {"text": ...} pieces, then {"finish_reason", "tokens", "seconds"}."""
    try:
        async for event in _job_events(job, t0):
            yield event
    finally:
        job.cancel()  # the client went away mid-stream: free the slot now


async def _job_events(job, t0: float):
    while True:
        kind, value = await job.events.get()
        if kind == "text":
            yield f"data: {json.dumps({'text': value})}\n\n"
        elif kind == "error":
            yield f"data: {json.dumps({'error': value})}\n\n"
            return
        else:
            final = {"finish_reason": value.finish_reason, "tokens": len(value.tokens),
                     "seconds": time.perf_counter() - t0}
            yield f"data: {json.dumps(final)}\n\n"
            yield "data: [DONE]\n\n"
            return
