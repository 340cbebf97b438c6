"""The HTTP API (FastAPI): generate (JSON or server-sent events) for a GPT, classify for a
BERT text classifier, health, Prometheus metrics.

Every error response's body is {"error": "<one readable line>"}: malformed JSON or a body that
is not UTF-8 (400), wrong or missing fields, NaN or infinite numbers and prompts that do not fit
the context (422), bodies over the limit, with or without a Content-Length (413), unknown paths
(404) and methods (405), a failure inside the server (500). Interactive docs are at /docs, the
schema at /openapi.json.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               CONTENT_TYPE_LATEST, generate_latest)
from pydantic import BaseModel, ConfigDict, Field

from lmjax.infer.generator import Generator, Request
from lmjax.serve.batcher import Batcher


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


class Classification(BaseModel):
    label: str
    probabilities: dict[str, float]
    truncated: bool


class ClassifyResponse(BaseModel):
    results: list[Classification]


class GenerateResponse(BaseModel):
    text: str
    tokens: int
    finish_reason: str
    seconds: float


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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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
        too_large = _error(413, f"request body over {self.max_bytes} bytes")
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
            return await _error(400, f"the request body is not UTF-8 (byte {e.start}); JSON "
                                     "must be UTF-8")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. a streaming response waiting for a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_app(generator: Generator | None = None, *, classifier=None, source: str = "",
               max_batch: int = 32, max_wait_s: float = 0.005, stream_chunk: int = 1,
               max_body_bytes: int = 64 * 1024) -> FastAPI:
    """The API for a `Generator` (POST /v1/generate) or a `TextClassifier` (POST /v1/classify)."""
    if (generator is None) == (classifier is None):
        raise ValueError("give a generator or a classifier")
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
            return _error(400, f"malformed JSON{': ' + str(ctx) if ctx else ''}")
        parts = []
        for e in errors:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            extra = f", not {e['input']}" if e.get("type") == "finite_number" else ""
            parts.append(f"{where}: {e.get('msg')}{extra}")
        return _error(422, "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def http_error(request: HTTPRequest, exc: HTTPException):
        # 404, 405 and the like: the same {"error": ...} shape as every other error.
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def server_error(request: HTTPRequest, exc: Exception):
        return _error(500, f"internal server error: {type(exc).__name__}")

    @app.middleware("http")
    async def count(request: HTTPRequest, call_next):
        t = time.perf_counter()
        response = await call_next(request)
        path = request.url.path if request.url.path in _PATHS else "other"
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - t)
        return response

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if classifier is not None:
        _classify_routes(app, classifier, source)
    else:
        _generate_routes(app, generator, source, metrics, max_batch, max_wait_s, stream_chunk)
    return app


def _classify_routes(app: FastAPI, classifier, source: str) -> None:
    @app.get("/health", summary="Liveness: the model is loaded")
    async def health():
        return {"status": "ok", "model": source, "context": classifier.seq_len,
                "classes": classifier.class_names}

    @app.post("/v1/classify", response_model=ClassifyResponse,
              responses={400: {"description": "malformed JSON"},
                         413: {"description": "body too large"},
                         422: {"description": "invalid fields"}},
              summary="Classify texts with the BERT classifier")
    def classify(body: ClassifyBody):  # plain def: runs in the thread pool, off the event loop
        return ClassifyResponse(results=classifier.classify(body.texts))


def _generate_routes(app, generator, source, metrics, max_batch, max_wait_s, stream_chunk):
    batcher = Batcher(generator, metrics, max_batch=max_batch, max_wait_s=max_wait_s,
                      stream_chunk=stream_chunk)
    block = generator.block_size
    app.state.batcher = batcher

    @app.get("/health", summary="Liveness: the model is loaded and the batcher is running")
    async def health():
        alive = batcher._thread.is_alive()
        return JSONResponse({"status": "ok" if alive else "batcher stopped", "model": source,
                             "context": block}, status_code=200 if alive else 503)

    @app.post("/v1/generate", response_model=GenerateResponse,
              responses={400: {"description": "malformed JSON"},
                         413: {"description": "body too large"},
                         422: {"description": "invalid fields, or prompt + max_new_tokens "
                                              "beyond the context"}},
              summary="Continue a prompt (optionally streamed as server-sent events)")
    async def generate(body: GenerateBody):
        ids = generator.encode(body.prompt)  # once: the generator takes the ids as they are
        n = len(ids)
        if n + body.max_new_tokens > block:
            return _error(422, f"the prompt is {n} tokens and max_new_tokens is "
                               f"{body.max_new_tokens}: together more than the model's context "
                               f"of {block} tokens; ask for at most {max(block - n, 0)} new "
                               "tokens or shorten the prompt.")
        if any(s == "" for s in body.stop):
            return _error(422, "stop: empty strings are not allowed.")
        request = Request(prompt=body.prompt, max_new_tokens=body.max_new_tokens,
                          temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                          seed=body.seed, stop=tuple(body.stop), prompt_ids=tuple(ids.tolist()))
        t = time.perf_counter()
        job = batcher.submit(request, stream=body.stream)
        if body.stream:
            return StreamingResponse(_events(job, t), media_type="text/event-stream")
        while True:
            kind, value = await job.events.get()
            if kind == "error":
                return _error(500, value)
            if kind == "done":
                return GenerateResponse(text=value.text, tokens=len(value.tokens),
                                        finish_reason=value.finish_reason,
                                        seconds=time.perf_counter() - t)

    app.router.on_shutdown.append(batcher.close)


_PATHS = {"/v1/generate", "/v1/classify", "/health", "/metrics", "/docs", "/openapi.json"}


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
