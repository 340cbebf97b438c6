"""lmjax's own endpoints: /health, POST /v1/generate (JSON or server-sent events) and
POST /v1/qa for a GPT, POST /v1/classify for a BERT text classifier, and for both the
Prometheus metrics and the playground page at /. Their errors are {"error": "<one line>"}."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import time

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from lmjax.data.sft import DEFAULT_END, format_prompt
from lmjax.models.generator import Request
from lmjax.serve.batcher import Busy
from lmjax.serve.jobs import Limits, Refused, check_fit, submit_and_wait
from lmjax.serve.middleware import Metrics, error
from lmjax.serve.schemas import (ClassifyBody, ClassifyResponse, GenerateBody,
                                 GenerateResponse, QABody, QAResponse)


@dataclasses.dataclass(frozen=True)
class QA:
    """An SFT run's answer format: the prompt template (ending in '{response}'), the stop
    strings that end an answer and the marker after each response (its config's
    sft.template, sft.stop and sft.end; a chat's turns end with the marker too)."""
    template: str
    stop: tuple[str, ...]
    end: str = DEFAULT_END


def add_page_routes(app: FastAPI, metrics: Metrics) -> None:
    """GET /metrics and the playground page at /, on every server."""

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, summary="The playground page")
    async def playground():
        page = importlib.resources.files("lmjax.serve") / "static" / "index.html"
        return HTMLResponse(page.read_text(encoding="utf-8"))


def add_generate_routes(app: FastAPI, generator, source: str, worker,
                        limits: Limits) -> None:
    """GET /health and POST /v1/generate for a GPT served by `worker`."""

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
            ids = check_fit(generator, limits, body.prompt, body.max_new_tokens,
                            "max_new_tokens")
        except Refused as e:
            return error(e.status, str(e))
        if any(s == "" for s in body.stop):
            return error(422, "stop: empty strings are not allowed.")
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
            return error(e.status, str(e))
        if isinstance(rows, JSONResponse):
            return rows
        return GenerateResponse(text=rows[0].text, tokens=len(rows[0].tokens),
                                finish_reason=rows[0].finish_reason,
                                seconds=time.perf_counter() - t)


def add_qa_route(app: FastAPI, generator, worker, limits: Limits, qa: QA) -> None:
    """POST /v1/qa for an SFT run: its template around the question, greedy, its stops."""

    @app.post("/v1/qa", response_model=QAResponse,
              responses={422: {"description": "invalid fields, or the question and answer do "
                                              "not fit the context"},
                         429: {"description": "the queue is full"}},
              summary="Answer a question with the SFT run's template (greedy, its stop strings)")
    async def answer(body: QABody, http: HTTPRequest):
        prompt = format_prompt(qa.template, body.question)
        try:
            ids = check_fit(generator, limits, prompt, body.max_new_tokens, "max_new_tokens")
        except Refused as e:
            return error(e.status, str(e))
        request = Request(prompt=prompt, max_new_tokens=body.max_new_tokens, temperature=0.0,
                          stop=qa.stop, prompt_ids=ids)
        t = time.perf_counter()
        rows = await _one(worker, request, http)
        if isinstance(rows, JSONResponse):
            return rows
        return QAResponse(answer=rows[0].text.strip(), tokens=len(rows[0].tokens),
                          finish_reason=rows[0].finish_reason,
                          seconds=time.perf_counter() - t)


def add_classify_routes(app: FastAPI, classifier, source: str) -> None:
    """GET /health and POST /v1/classify for a BERT text classifier."""

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


async def _one(worker, request: Request, http: HTTPRequest):
    """One request run to the end: its completions, or the error response to send."""
    try:
        rows = await submit_and_wait(worker, [request], http)
    except Busy as e:
        return error(e.status, str(e))
    except RuntimeError as e:
        return error(500, str(e))
    return error(499, "the client went away") if rows is None else rows


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
