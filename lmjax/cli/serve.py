"""Serve a run over HTTP: /v1/generate for a GPT run (or int8 export), /v1/classify for a BERT
text classifier run, plus /health, /metrics and the API docs at /docs.

    python -m lmjax.serve --workdir=runs/gpt --port=8000
    curl -s localhost:8000/v1/generate -d '{"prompt": "ROMEO:", "max_new_tokens": 50}'

Loads the run directory alone (no corpus), compiles the common shapes once, then serves with
uvicorn. See docs/serving.md.
"""

from __future__ import annotations

from absl import flags

from lmjax.cli.common import require
from lmjax.infer.classify import TextClassifier
from lmjax.infer.generator import Generator
from lmjax.infer.load import load
from lmjax.serve.batcher import warm_up

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir or an int8 export directory.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: all).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_BEST = flags.DEFINE_bool("best", False, "Serve the run's best checkpoint.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "Most requests run together on the device.")
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 5.0, "How long the first request of a batch "
                               "waits for others.")
_CHUNK = flags.DEFINE_integer("stream_chunk", 1, "Decoding steps between streamed events.")
_MAX_BODY = flags.DEFINE_integer("max_body_bytes", 64 * 1024, "Largest accepted request body.")
_WARMUP = flags.DEFINE_bool("warmup", True, "Compile the common batch shapes before serving.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: a run's workdir or an int8 export.")
    # The server's dependencies are an optional extra (.[serve]): imported when serving.
    import uvicorn  # noqa: lazy, optional extra

    from lmjax.serve.app import create_app  # noqa: lazy, optional extra (FastAPI)

    loaded = load(workdir, best=_BEST.value, tasks=("lm", "text_classify"))
    print(f"Model: {loaded.source}", flush=True)
    settings = dict(source=loaded.source, max_batch=_MAX_BATCH.value,
                    max_wait_s=_MAX_WAIT.value / 1000, stream_chunk=_CHUNK.value,
                    max_body_bytes=_MAX_BODY.value)
    if loaded.cfg.task == "text_classify":
        api = create_app(classifier=TextClassifier.from_task(loaded.task, loaded.params),
                         **settings)
    else:
        generator = Generator(loaded.model, loaded.params, loaded.tokenizer,
                              max_batch=_MAX_BATCH.value)
        if _WARMUP.value:
            warm_up(generator, _MAX_BATCH.value)
        api = create_app(generator, **settings)
    print(f"Serving on http://{_HOST.value}:{_PORT.value} (API docs at /docs)", flush=True)
    uvicorn.run(api, host=_HOST.value, port=_PORT.value, log_level="warning")
