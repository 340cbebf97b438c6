"""Benchmark generation: tokens/s and time to first token, optionally the HTTP server, and
Hugging Face `generate` on the same weights.

    # a trained run (the CPU default), batch 1 and 32, prompt 32, 256 greedy tokens
    python -m lmjax.bench_generate --workdir=runs/gpt
    # GPT-2 124M with random weights (no data needed), against transformers on the same weights
    python -m lmjax.bench_generate --config=configs/gpt.py:gpt2_124m --hf_compare
    # the server: requests/s and p50/p99 latency under 16 concurrent clients
    python -m lmjax.bench_generate --workdir=runs/gpt --server --clients=16

Decoding is timed on the device path (prefill, then the jitted decode loop) after a warm-up
run that compiles it; the generated tokens are fetched to the host inside the timing. Time to
first token is the prefill of the batch, including the first sampled token on the host.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "With random weights: the config "
                                          "whose model to build.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run (or int8 export) instead.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes to time.")
_PROMPT = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens per row.")
_NEW = flags.DEFINE_integer("new_tokens", 256, "Greedy tokens per row (capped by the context).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per batch size (the median counts).")
_HF = flags.DEFINE_bool("hf_compare", False, "Also time transformers' GPT2LMHeadModel.generate "
                        "(PyTorch, KV cache, bfloat16 on a GPU) on the same weights.")
_SERVER = flags.DEFINE_bool("server", False, "Also benchmark the HTTP server on localhost.")
_CLIENTS = flags.DEFINE_integer("clients", 16, "Server: concurrent clients.")
_REQUESTS = flags.DEFINE_integer("requests", 160, "Server: requests in total.")
_SERVER_NEW = flags.DEFINE_integer("server_new_tokens", 64, "Server: new tokens per request.")


class _NoTokenizer:
    """Random-weight models have no tokenizer; the benchmark feeds token ids directly."""

    def encode(self, text):
        return np.zeros((len(text),), np.int32)

    def decode(self, ids):
        return "".join(chr(65 + int(i) % 26) for i in ids)


def _model_from_config(cfg):
    import jax
    import jax.numpy as jnp
    import flax.linen as nn

    from lmjax.models.gpt import GPT
    from lmjax.tasks.lm import model_config

    vocab = cfg.model.vocab_size or cfg.data.vocab_size or 256
    model = GPT(model_config(cfg, vocab))
    params = jax.jit(lambda k: nn.meta.unbox(model.init(k, jnp.zeros((1, 8), jnp.int32)))[
        "params"])(jax.random.PRNGKey(0))
    return model, params, _NoTokenizer(), f"{cfg.model.num_layers}-layer d={cfg.model.d_model} "\
        f"GPT, random weights"


def time_generation(generator, batch: int, prompt_len: int, new_tokens: int,
                    repeats: int = 3) -> dict:
    """Median seconds for prefill (time to first token) and for the whole generation."""
    import jax
    import jax.numpy as jnp

    from lmjax.infer import decode as dec
    from lmjax.infer.generate import Request, _round_up

    rng = np.random.default_rng(0)
    vocab = generator.model.cfg.vocab_size
    contexts = [rng.integers(0, vocab, prompt_len).astype(np.int32) for _ in range(batch)]
    requests = [Request("", max_new_tokens=new_tokens)] * batch
    args = generator._arrays(contexts, requests, [0] * batch, [new_tokens] * batch)
    capacity = _round_up(max(new_tokens - 1, 1), 64)
    slots = args[0].shape[1] + capacity
    steps = jnp.asarray(new_tokens - 1, jnp.int32)

    def run():
        t0 = time.perf_counter()
        state = dec.prefill(generator.model, generator.params, *args, slots=slots)
        jax.device_get(state.last)
        t1 = time.perf_counter()
        state, out, written = dec.decode(generator.model, generator.params, state, steps,
                                         capacity=capacity)
        out, written = jax.device_get((out, written))
        t2 = time.perf_counter()
        assert int(written) == new_tokens - 1
        return t1 - t0, t2 - t0

    t = time.perf_counter()
    run()  # compiles
    compile_s = time.perf_counter() - t
    times = [run() for _ in range(repeats)]
    ttft = statistics.median(a for a, _ in times)
    total = statistics.median(b for _, b in times)
    return {"batch": batch, "ttft_s": ttft, "total_s": total, "compile_s": compile_s,
            "tokens_per_s": batch * new_tokens / total,
            "decode_tokens_per_s": batch * (new_tokens - 1) / max(total - ttft, 1e-9)}


def time_hf(model_cfg, params, batch: int, prompt_len: int, new_tokens: int,
            repeats: int = 3) -> dict:
    """transformers' generate (greedy, KV cache) on the same weights, bfloat16 on a GPU."""
    import tempfile

    import jax
    import torch
    import transformers

    from lmjax.convert import gpt2
    from lmjax.models.gpt import unstack_layers

    params = unstack_layers(jax.device_get(params), model_cfg.num_layers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        gpt2.write_hf(tmp, jax.tree.map(lambda x: np.asarray(x, np.float32), params), model_cfg)
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp, dtype=dtype).to(device).eval()
    ids = torch.as_tensor(np.random.default_rng(0).integers(
        0, model_cfg.vocab_size, (batch, prompt_len)), device=device)

    def run(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                        min_new_tokens=n, do_sample=False, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run(new_tokens)  # warm-up
    total = statistics.median(run(new_tokens) for _ in range(repeats))
    ttft = statistics.median(run(1) for _ in range(repeats))
    return {"batch": batch, "ttft_s": ttft, "total_s": total, "device": device,
            "tokens_per_s": batch * new_tokens / total}


def bench_server(generator, clients: int, requests: int, new_tokens: int, source: str) -> dict:
    """Requests/s and latency percentiles of the real server (uvicorn in a thread)."""
    import httpx

    from lmjax.serve.app import create_app, serve_in_thread
    from lmjax.serve.batcher import warm_up

    warm_up(generator, clients, log=lambda s: None)
    api = create_app(generator, source=source, max_batch=clients)
    rng = np.random.default_rng(0)
    prompts = ["ROMEO:", "JULIET:", "KING HENRY:", "To be, or not", "\n", "First Citizen:"]
    latencies, failures = [], 0

    async def client(queue, http):
        nonlocal failures
        while not queue.empty():
            i = queue.get_nowait()
            body = {"prompt": prompts[i % len(prompts)], "max_new_tokens": new_tokens,
                    "temperature": 0.8, "seed": int(rng.integers(1 << 30))}
            t = time.perf_counter()
            try:
                r = await http.post("/v1/generate", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            failures += not ok

    async def run(url):
        queue = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            await asyncio.gather(*(client(queue, http) for _ in range(clients)))

    with serve_in_thread(api) as url:
        t = time.perf_counter()
        asyncio.run(run(url))
        seconds = time.perf_counter() - t
    lat = np.asarray(latencies)
    return {"requests": requests, "failures": failures, "requests_per_s": requests / seconds,
            "tokens_per_s": (requests - failures) * new_tokens / seconds,
            "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99))}


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        sys.exit(f"lmjax.bench_generate: error: unexpected arguments {argv[1:]}")
    if bool(_WORKDIR.value) == bool(_CONFIG.value):
        sys.exit("lmjax.bench_generate: error: give --workdir (a trained run) or --config "
                 "(random weights), not both.")
    import jax

    from lmjax.infer.generate import Generator

    if _WORKDIR.value:
        from lmjax.infer.load import load

        loaded = load(_WORKDIR.value)
        model, params, tokenizer, source = (loaded.model, loaded.params, loaded.tokenizer,
                                            loaded.source)
    else:
        model, params, tokenizer, source = _model_from_config(_CONFIG.value)
    batches = [int(b) for b in _BATCHES.value]
    generator = Generator(model, params, tokenizer, max_batch=max(batches + [_CLIENTS.value]),
                          stop_at_eot=False)
    block = model.cfg.block_size
    new = min(_NEW.value, block - _PROMPT.value)
    print(f"Model: {source}; device: {jax.devices()[0].device_kind} "
          f"({jax.default_backend()}); prompt {_PROMPT.value}, {new} greedy new tokens")
    for b in batches:
        r = time_generation(generator, b, _PROMPT.value, new, _REPEATS.value)
        print(f"lmjax  batch {b:3d}: {r['tokens_per_s']:10,.0f} tokens/s "
              f"(decode alone {r['decode_tokens_per_s']:,.0f}), time to first token "
              f"{1e3 * r['ttft_s']:.1f} ms, {r['total_s']:.3f} s per run "
              f"(compile {r['compile_s']:.1f} s)")
        if _HF.value:
            h = time_hf(model.cfg, params, b, _PROMPT.value, new, _REPEATS.value)
            print(f"HF     batch {b:3d}: {h['tokens_per_s']:10,.0f} tokens/s, time to first "
                  f"token {1e3 * h['ttft_s']:.1f} ms ({h['device']}); lmjax is "
                  f"{r['tokens_per_s'] / h['tokens_per_s']:.1f}x")
    if _SERVER.value:
        s = bench_server(generator, _CLIENTS.value, _REQUESTS.value,
                         min(_SERVER_NEW.value, block - 16), source)
        print(f"server, {_CLIENTS.value} clients: {s['requests_per_s']:.1f} requests/s, "
              f"{s['tokens_per_s']:,.0f} tokens/s, latency p50 {1e3 * s['p50_s']:.0f} ms "
              f"p99 {1e3 * s['p99_s']:.0f} ms, {s['failures']} failed of {s['requests']}")


if __name__ == "__main__":
    app.run(main)
