"""Serve a run over HTTP: OpenAI's /v1/completions, /v1/chat/completions and /v1/models plus
/v1/generate for a language model run (GPT, Llama, Qwen, ...; or an int8 export), POST /v1/qa
as well for an SFT run (its template and stop strings, greedy), /v1/classify for a BERT text
classifier run, /health, /metrics, the playground page at / and the API docs at /docs.

    lmjax serve --workdir=runs/gpt --port=8000
    curl -s localhost:8000/v1/completions \
         -d '{"model": "gpt", "prompt": "ROMEO:", "max_tokens": 50}'
    curl -s localhost:8000/v1/generate -d '{"prompt": "ROMEO:", "max_new_tokens": 50}'

Requests are batched continuously over --max_slots KV-cache slots (--engine=static: the
older batcher that runs whole batches, kept for comparison).

Loads the run directory alone (no corpus), compiles the common shapes once, then serves with
uvicorn. See docs/serving.md.
"""

from __future__ import annotations

import os

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.infer.classify import TextClassifier
from lmjax.infer.load import load
from lmjax.models.generator import Generator
from lmjax.serve.batcher import warm_up
from lmjax.tasks.base import ANSWERS, DECODES, TEXT_CLASSES
from lmjax.serve.engine import warm_up as warm_up_engine

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir or an int8 export directory.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: all).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_BEST = flags.DEFINE_bool("best", False, "Serve the run's best checkpoint.")
_ENGINE = flags.DEFINE_enum("engine", "slots", ["slots", "static"], "slots: continuous "
                            "batching over KV-cache slots; static: whole batches (comparison).")
_SLOTS = flags.DEFINE_integer("max_slots", 16, "Engine: KV-cache slots, i.e. requests decoded "
                              "together.")
_QUEUE = flags.DEFINE_integer("max_queue", 64, "Requests that may wait for a slot; more get "
                              "429.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 0, "Most new tokens one request may ask for "
                                   "(0: the context).")
_PREFILL = flags.DEFINE_integer("prefill_tokens", 512, "Engine: prompt tokens admitted before "
                                "each generate step (at least one request).")
_NAME = flags.DEFINE_string("model_name", None, "The model id of /v1/models (default: the "
                            "workdir's folder name).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "Static engine: most requests run together.")
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 5.0, "How long the first request of a batch "
                               "waits for others.")
_CHUNK = flags.DEFINE_integer("stream_chunk", 1, "Decoding steps between streamed events.")
_MAX_BODY = flags.DEFINE_integer("max_body_bytes", 64 * 1024, "Largest accepted request body.")
_WARMUP = flags.DEFINE_bool("warmup", True, "Compile the common batch shapes before serving.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: a run's workdir or an int8 export.")
    for flag in (_SLOTS, _QUEUE, _PREFILL, _MAX_BATCH):
        if flag.value < 1:
            fail(f"--{flag.name}={flag.value}: give at least 1.")
    if _MAX_TOKENS.value < 0:
        fail(f"--max_tokens={_MAX_TOKENS.value}: give 0 (the context) or more.")
    # The server's dependencies are an optional extra (.[serve]): imported when serving.
    import uvicorn  # noqa: lazy, optional extra

    from lmjax.serve.app import QA, create_app  # noqa: lazy, optional extra (FastAPI)

    loaded = load(workdir, best=_BEST.value, needs=(DECODES, TEXT_CLASSES))
    print(f"Model: {loaded.source}", flush=True)
    name = _NAME.value or os.path.basename(os.path.normpath(workdir))
    settings = dict(source=loaded.source, model_name=name, engine=_ENGINE.value,
                    max_slots=_SLOTS.value, max_queue=_QUEUE.value, max_tokens=_MAX_TOKENS.value,
                    prefill_tokens=_PREFILL.value, max_batch=_MAX_BATCH.value,
                    max_wait_s=_MAX_WAIT.value / 1000, stream_chunk=_CHUNK.value,
                    max_body_bytes=_MAX_BODY.value)
    if TEXT_CLASSES in loaded.capabilities:
        api = create_app(classifier=TextClassifier.from_loaded(loaded),
                         **settings)
    else:
        generator = Generator(loaded.model, loaded.params, loaded.tokenizer,
                              max_batch=max(_MAX_BATCH.value, _SLOTS.value))
        qa = None
        if ANSWERS in loaded.capabilities:  # its answer format: POST /v1/qa
            qa = QA(template=loaded.cfg.sft.template, stop=tuple(loaded.cfg.sft.stop))
        api = create_app(generator, qa=qa, **settings)
        if _WARMUP.value and _ENGINE.value == "slots":
            warm_up_engine(api.state.engine)
        elif _WARMUP.value:
            warm_up(generator, _MAX_BATCH.value)
    print(f"Serving on http://{_HOST.value}:{_PORT.value} (API docs at /docs)", flush=True)
    uvicorn.run(api, host=_HOST.value, port=_PORT.value, log_level="warning")
