"""The HTTP API (FastAPI), assembled from its parts: schemas.py (request and response bodies),
middleware.py (body limit, error shapes, Prometheus metrics), jobs.py (from a body to the
engine and back), routes.py (lmjax's endpoints, the playground page and /metrics) and
openai_api.py (OpenAI's /v1/completions, /v1/chat/completions and /v1/models, and vLLM's
tokenizer routes). Interactive docs are at /docs, the schema at /openapi.json. local.py runs
the app on localhost for tests and benchmarks."""

from __future__ import annotations

from fastapi import FastAPI

from lmjax.data.chat import ChatFormat
from lmjax.models.generator import Generator
from lmjax.serve.batcher import Batcher
from lmjax.serve.engine import Engine
from lmjax.serve.jobs import Limits
from lmjax.serve.middleware import BodyLimit, Count, Metrics, add_error_handlers
from lmjax.serve.openai_api import add_openai_routes
from lmjax.serve.routes import (QA, add_classify_routes, add_generate_routes, add_page_routes,
                                add_qa_route)


def create_app(generator: Generator | None = None, *, classifier=None, source: str = "",
               model_name: str = "lmjax", engine: str = "slots", max_slots: int = 16,
               max_queue: int = 64, max_tokens: int = 0, prefill_tokens: int = 512,
               max_batch: int = 32, max_wait_s: float = 0.005, stream_chunk: int = 1,
               max_body_bytes: int = 64 * 1024, qa: QA | None = None) -> FastAPI:
    """The API for a `Generator` (OpenAI's completions, chat completions and models, vLLM's
    tokenizer routes, POST /v1/generate) or a `TextClassifier` (POST /v1/classify).

    engine: 'slots' (continuous batching over `max_slots` KV-cache slots, the default) or
    'static' (the batcher that runs whole batches of up to `max_batch`, for comparison).
    At most `max_queue` requests wait for the device (429 beyond); `max_tokens` > 0 caps the
    new tokens one request may ask for. `model_name` is the id /v1/models lists. With `qa` (an
    SFT run's template and stop strings), POST /v1/qa answers questions greedily. Chats are
    rendered by the tokenizer's Hugging Face template, else lmjax's QA format with the SFT
    run's template (lmjax/data/chat.py).
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
    add_error_handlers(app)
    app.add_middleware(Count, metrics=metrics, routes=app.routes)  # outermost: sees every 413
    add_page_routes(app, metrics)
    if classifier is not None:
        add_classify_routes(app, classifier, source)
        return app
    if engine == "slots":
        worker = Engine(generator, metrics, max_slots=max_slots, max_queue=max_queue,
                        prefill_tokens=prefill_tokens)
    else:
        worker = Batcher(generator, metrics, max_batch=max_batch, max_wait_s=max_wait_s,
                         stream_chunk=stream_chunk, max_queue=max_queue)
    app.state.engine = worker
    app.router.on_shutdown.append(worker.close)
    limits = Limits(generator.block_size, max_tokens or generator.block_size, model_name)
    add_generate_routes(app, generator, source, worker, limits)
    chat = ChatFormat.for_run(generator.tokenizer, *((qa.template, qa.end) if qa else ()))
    add_openai_routes(app, generator, source, worker, limits, chat=chat)
    if qa is not None:
        add_qa_route(app, generator, worker, limits, qa)
    return app
