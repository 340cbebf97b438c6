"""What every request passes through around the routes: the body limit, the two error shapes
and the handlers that give every error one of them, and the Prometheus metrics.

Every error response of the lmjax endpoints has the body {"error": "<one readable line>"}:
malformed JSON or a body that is not UTF-8 (400), wrong or missing fields, NaN or infinite
numbers and prompts that do not fit the context (422), bodies over the limit, with or without a
Content-Length (413), unknown paths (404) and methods (405), a full queue (429), a stopped
engine (503), a failure inside the server (500). The OpenAI endpoints (under OPENAI_PATHS)
answer in OpenAI's shape instead, {"error": {"message", "type", "param", "code"}}, with 400
for every invalid request, as OpenAI's own API does.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match


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


def error(status: int, message: str) -> JSONResponse:
    """lmjax's error body."""
    return JSONResponse({"error": message}, status_code=status)


# A prefix, not the route table: an unknown path under them (or on a classifier's server) is
# still answered in OpenAI's shape. A route of openai_api.py must start with one of these
# (tests/serve/test_middleware.py checks it).
OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models",
                # vLLM's tokenizer routes at the root, which lm-eval's remote tokenizer calls
                "/tokenize", "/detokenize", "/tokenizer_info")
_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error",
                 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error", 503: "server_overloaded", 500: "server_error"}


def openai_error(status: int, message: str, param: str | None = None,
                 code: str | None = None) -> JSONResponse:
    """OpenAI's error body: its clients raise their own error type from the status and read
    the message from here."""
    return JSONResponse({"error": {"message": message, "type": _OPENAI_TYPES.get(
        status, "invalid_request_error"), "param": param, "code": code}}, status_code=status)


def error_for(path: str, status: int, message: str, param: str | None = None) -> JSONResponse:
    """The error shape of the endpoint asked: OpenAI's under its paths (where every invalid
    request is a 400, `param` naming the field at fault), lmjax's elsewhere."""
    if path.startswith(OPENAI_PATHS):
        return openai_error(400 if status == 422 else status, message, param)
    return error(status, message)


def add_error_handlers(app: FastAPI) -> None:
    """Invalid bodies, unknown paths and methods, and failures inside the server answered
    in the shape of the endpoint asked, each as one readable line."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HTTPRequest, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = errors[0].get("ctx", {}).get("error", "")
            return error_for(request.url.path, 400,
                             f"malformed JSON{': ' + str(ctx) if ctx else ''}")
        parts, fields = [], []
        for e in errors:
            loc = [str(x) for x in e.get("loc", ()) if x != "body"]
            where = ".".join(loc) or "body"
            extra = f", not {e['input']}" if e.get("type") == "finite_number" else ""
            parts.append(f"{where}: {e.get('msg')}{extra}")
            fields.append(loc[0] if loc else None)  # OpenAI's param: the top-level field
        return error_for(request.url.path, 422, "; ".join(parts), fields[0] if fields else None)

    @app.exception_handler(HTTPException)
    async def http_error(request: HTTPRequest, exc: HTTPException):
        # 404, 405 and the like: the same shape as every other error.
        response = error_for(request.url.path, exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def server_error(request: HTTPRequest, exc: Exception):
        return error_for(request.url.path, 500, f"internal server error: "
                                                f"{type(exc).__name__}")


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
        too_large = error_for(path, 413, f"request body over {self.max_bytes} bytes")
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
            return await error_for(path, 400, f"the request body is not UTF-8 (byte "
                                   f"{e.start}); JSON must be UTF-8")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. a streaming response waiting for a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def route_label(routes: list[BaseRoute], scope) -> str:
    """The path a request is counted under: the registered route it reaches, as registered
    (`/v1/models/{name:path}`; a wrong method counts under its route, as its 405 is that
    route's), else "other". One label per route, never one per URL, keeps the metric's
    series bounded; reading the app's own route table keeps every route in it."""
    for route in routes:
        if route.matches(scope)[0] is not Match.NONE:
            return route.path
    return "other"


class Count:
    """Requests by route and status, and their latency: plain ASGI (Starlette's
    BaseHTTPMiddleware would hide a client's disconnect from a streaming response).
    `routes` is the app's route table (app.routes), read at each request."""

    def __init__(self, app, metrics: Metrics, routes: list[BaseRoute]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t, status = time.perf_counter(), [500]
        path = route_label(self.routes, scope)

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - t)
