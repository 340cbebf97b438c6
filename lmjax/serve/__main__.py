"""Command line: `python -m lmjax.serve --workdir=runs/gpt [--port=8000]`.

Loads a run's latest checkpoint (or --best, or an int8 export), compiles the common shapes
once, then serves the API in lmjax/serve/app.py with uvicorn: /v1/generate for a GPT run,
/v1/classify for a BERT text classifier run (configs/classify.py). See docs/serving.md.
"""

from __future__ import annotations

from absl import app, flags

from lmjax.infer.cli import load_or_fail, start

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


def main(argv) -> None:
    start("lmjax.serve", argv, _WORKDIR.value)
    import uvicorn

    from lmjax.infer.generate import Generator
    from lmjax.serve.app import create_app
    from lmjax.serve.batcher import warm_up

    loaded = load_or_fail("lmjax.serve", _WORKDIR.value, _BEST.value,
                          tasks=("lm", "text_classify"))
    print(f"Model: {loaded.source}", flush=True)
    settings = dict(source=loaded.source, max_batch=_MAX_BATCH.value,
                    max_wait_s=_MAX_WAIT.value / 1000, stream_chunk=_CHUNK.value,
                    max_body_bytes=_MAX_BODY.value)
    if loaded.cfg.task == "text_classify":
        from lmjax.infer.classify import TextClassifier

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


if __name__ == "__main__":
    app.run(main)
