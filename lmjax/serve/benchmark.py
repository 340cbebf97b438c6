"""Timing generation (the library of `lmjax bench_generate`): tokens/s and time to
first token through the Generator's own prefill and decode, Hugging Face `generate` on the
same weights (a GPT as GPT2LMHeadModel, a decoder family's model as its own class), and the
HTTP server under concurrent clients.

Decoding is timed on the device path (prefill, then the jitted decode loop) after a warm-up
run that compiles it; the generated tokens are fetched to the host inside the timing. Time to
first token is the prefill of the batch, including the first sampled token on the host.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.convert import hf as convert_hf
from lmjax.infer import int8
from lmjax.models.generator import Request
from lmjax.serve.batcher import warm_up
from lmjax.tasks.lm import GPT, model_family


class _NoTokenizer:
    """Random-weight models have no tokenizer; the benchmark feeds token ids directly."""

    def encode(self, text):
        return np.zeros((len(text),), np.int32)

    def decode(self, ids):
        return "".join(chr(65 + int(i) % 26) for i in ids)


def model_from_config(cfg):
    """(model, random parameters, a stand-in tokenizer, a description) for `cfg`'s model: a
    GPT, or a decoder family's (model.name: llama, qwen3, ...; configs/llama.py)."""
    vocab = cfg.model.get("vocab_size") or cfg.data.get("vocab_size") or 256
    family = model_family(cfg.model)
    model = family.module(family.config.from_section(cfg.model, vocab_size=vocab))
    params = jax.jit(lambda k: nn.meta.unbox(model.init(k, jnp.zeros((1, 8), jnp.int32)))[
        "params"])(jax.random.PRNGKey(0))
    name = "GPT" if family is GPT else cfg.model.name
    return model, params, _NoTokenizer(), f"{cfg.model.num_layers}-layer d={cfg.model.d_model} "\
        f"{name}, random weights"


def prompts(batch: int, prompt_len: int, vocab: int, seed: int = 0) -> np.ndarray:
    """(batch, prompt_len) random token ids: the prompts both lmjax and transformers get."""
    return np.random.default_rng(seed).integers(0, vocab, (batch, prompt_len)).astype(np.int32)


def time_generation(generator, batch: int, prompt_len: int, new_tokens: int,
                    repeats: int = 3) -> dict:
    """Median seconds for prefill (time to first token) and for the whole generation, through
    the Generator's own prefill and decode; and the greedy tokens (batch, new_tokens)."""
    contexts = list(prompts(batch, prompt_len, generator.model.cfg.vocab_size))
    requests = [Request("", max_new_tokens=new_tokens)] * batch

    def run():
        t0 = time.perf_counter()
        state, capacity = generator.prefill(contexts, requests, [0] * batch, [new_tokens] * batch)
        first = jax.device_get(state.last)
        t1 = time.perf_counter()
        state, out, written = generator.decode(state, new_tokens - 1, capacity)
        out, written = jax.device_get((out, written))
        t2 = time.perf_counter()
        assert int(written) == new_tokens - 1
        tokens = np.concatenate([first[:batch, None], out[:batch, :new_tokens - 1]], axis=1)
        return t1 - t0, t2 - t0, tokens

    t = time.perf_counter()
    run()  # compiles
    compile_s = time.perf_counter() - t
    times = [run() for _ in range(repeats)]
    ttft = statistics.median(a for a, _, _ in times)
    total = statistics.median(b for _, b, _ in times)
    return {"batch": batch, "ttft_s": ttft, "total_s": total, "compile_s": compile_s,
            "tokens_per_s": batch * new_tokens / total,
            "decode_tokens_per_s": batch * (new_tokens - 1) / max(total - ttft, 1e-9),
            "tokens": times[-1][2]}


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> dict:
    """Bytes/s this machine streams from memory, measured two ways: a jitted sum over a `gib`
    GiB float32 array (XLA's own kernels and threads, the way decoding reads weights) and
    NumPy's sum over the same bytes. The larger is the bandwidth bound's numerator."""
    n = int(gib * 2**30) // 4
    host = np.ones((n,), np.float32)
    device = jax.device_put(host)
    total = jax.jit(jnp.sum)

    def best(fn):
        fn()  # compiles, faults the pages in
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return host.nbytes / statistics.median(times)

    xla = best(lambda: total(device).block_until_ready())
    numpy = best(lambda: host.sum())
    return {"xla_bytes_per_s": xla, "numpy_bytes_per_s": numpy,
            "bytes_per_s": max(xla, numpy)}


def bytes_per_token(params, cfg, slots: int) -> int:
    """What decoding one token at batch 1 reads: every parameter (a tied embedding is the
    output layer's matrix; an untied input embedding is only gathered from, one row, so it is
    left out) and every layer's keys and values over the cache's `slots` (the decoding step
    attends over all of them, masked): the key/value heads', which grouped-query attention
    makes fewer than the query heads."""
    weights = int8.weight_bytes(params)["total"]
    if not getattr(cfg, "tie_embeddings", True):
        table = params["embed"]["embedding"]
        weights -= table.size * jnp.dtype(table.dtype).itemsize
    dtype = jnp.dtype(getattr(cfg, "dtype", "float32"))
    width = getattr(cfg, "num_kv_heads", 0) * getattr(cfg, "head_dim", 0) or cfg.d_model
    return int(weights + 2 * cfg.num_layers * slots * width * dtype.itemsize)


def hf_model(model_cfg, params):
    """transformers' model of the same weights: what `lmjax convert to_hf` writes (a GPT as
    GPT2LMHeadModel, a decoder family's model as LlamaForCausalLM, Qwen3ForCausalLM, ...),
    through a temporary directory, loaded by AutoModelForCausalLM: on a GPU in the model's
    compute dtype (bfloat16 or float32), on a CPU in float32."""
    # PyTorch and transformers: optional (.[test]/.[hf]), only for --hf_compare.
    import torch  # noqa: lazy, optional
    import transformers  # noqa: lazy, optional

    if type(model_cfg) not in convert_hf.LM_WRITERS:
        raise ValueError(f"--hf_compare: a {type(model_cfg).__name__.replace('Config', '')} "
                         "model has no Hugging Face class here (GPT and the decoder families).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, jnp.dtype(model_cfg.dtype).name) if device == "cuda" else \
        torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        convert_hf.write_lm(tmp, jax.tree.map(lambda x: np.asarray(x, np.float32),
                                              jax.device_get(params)), model_cfg)
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype)
    return hf.to(device).eval()


def time_hf(hf, vocab_size: int, batch: int, prompt_len: int, new_tokens: int,
            repeats: int = 3) -> dict:
    """`hf_model`'s generate (greedy, KV cache) on the prompts lmjax gets (`prompts`). Returns
    the timings and the greedy tokens (batch, new_tokens) of its first run."""
    import torch  # noqa: lazy, optional (.[test]/.[hf]), only for --hf_compare

    cuda = hf.device.type == "cuda"
    ids = torch.as_tensor(prompts(batch, prompt_len, vocab_size), dtype=torch.long,
                          device=hf.device)

    def run(n):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False, pad_token_id=0)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, out[:, prompt_len:].cpu().numpy()

    _, tokens = run(new_tokens)  # warm-up
    total = statistics.median(run(new_tokens)[0] for _ in range(repeats))
    ttft = statistics.median(run(1)[0] for _ in range(repeats))
    return {"batch": batch, "ttft_s": ttft, "total_s": total, "device": hf.device.type,
            "dtype": str(hf.dtype).replace("torch.", ""),
            "tokens_per_s": batch * new_tokens / total, "tokens": tokens}


def same_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens every row of `a` and `b` (batch, n) share."""
    n = min(a.shape[1], b.shape[1])
    differ = (a[:, :n] != b[:, :n]).any(axis=0)
    return int(np.argmax(differ)) if differ.any() else n


def _workload(requests: int, mixed: bool, new_tokens: int, context: int, seed: int = 0):
    """(prompt length, new tokens) per request: fixed, or the mixed load (prompts of 16-256
    tokens, 8-256 new tokens, both uniform and cut to fit the context)."""
    rng = np.random.default_rng(seed)
    if not mixed:
        return [(8, new_tokens)] * requests
    out = []
    for _ in range(requests):
        p = int(rng.integers(16, 257))
        out.append((min(p, context // 2), int(min(rng.integers(8, 257), context - min(
            p, context // 2)))))
    return out


def bench_server(generator, clients: int, requests: int, new_tokens: int, source: str,
                 engine: str = "slots", mixed: bool = False, max_slots: int = 0,
                 prefill_tokens: int = 512) -> dict:
    """The real server (uvicorn in a thread) under `clients` concurrent streaming clients:
    generated tokens/s, time to first token (first streamed piece) and latency percentiles,
    failures. `engine` is 'slots' or 'static'."""
    # The server's dependencies are an optional extra (.[serve]): only for --server.
    import httpx  # noqa: lazy, optional extra

    from lmjax.serve.app import create_app  # noqa: lazy, optional extra
    from lmjax.serve.engine import warm_up as warm_up_engine  # noqa: lazy, optional extra
    from lmjax.serve.local import serve_in_thread  # noqa: lazy, optional extra

    api = create_app(generator, source=source, engine=engine, max_slots=max_slots or clients,
                     max_batch=clients, max_queue=max(64, requests),
                     prefill_tokens=prefill_tokens)
    if engine == "slots":
        warm_up_engine(api.state.engine, log=lambda s: None)
    else:
        warm_up(generator, clients, log=lambda s: None)
    work = _workload(requests, mixed, new_tokens, generator.block_size)
    rng = np.random.default_rng(1)
    latencies, ttfts, tokens, failures = [], [], [0], [0]

    async def one(http, i):
        plen, new = work[i]
        body = {"model": "lmjax", "prompt": "x" * plen, "max_tokens": new, "temperature": 0.8,
                "seed": int(rng.integers(1 << 30)), "stream": True,
                "stream_options": {"include_usage": True}}
        t, first, done = time.perf_counter(), None, False
        try:
            async with http.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if first is None:
                        first = time.perf_counter() - t
                    if line == "data: [DONE]":
                        done = True
                    elif '"usage"' in line and '"choices": []' in line:
                        tokens[0] += json.loads(line[6:])["usage"]["completion_tokens"]
                ok = r.status_code == 200 and done
        except httpx.HTTPError:
            ok = False
        failures[0] += not ok
        latencies.append(time.perf_counter() - t)
        if ok:
            ttfts.append(first)

    async def client(queue, http):
        while not queue.empty():
            await one(http, queue.get_nowait())

    async def run(url):
        queue = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        async with httpx.AsyncClient(base_url=url, timeout=600,
                                     limits=httpx.Limits(max_connections=clients + 8)) as http:
            await asyncio.gather(*(client(queue, http) for _ in range(clients)))

    with serve_in_thread(api) as url:
        t = time.perf_counter()
        asyncio.run(run(url))
        seconds = time.perf_counter() - t
    lat, ttft = np.asarray(latencies), np.asarray(ttfts or [np.nan])
    return {"engine": engine, "requests": requests, "failures": failures[0],
            "seconds": seconds, "requests_per_s": requests / seconds,
            "tokens_per_s": tokens[0] / seconds, "tokens": tokens[0],
            "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
            "ttft_p50_s": float(np.percentile(ttft, 50)),
            "ttft_p99_s": float(np.percentile(ttft, 99))}


def bench_overload(generator, source: str, requests: int = 200, max_queue: int = 50,
                   max_slots: int = 8, new_tokens: int = 32) -> dict:
    """`requests` at once against a queue limit: the status codes counted, and /health polled
    throughout (its slowest answer, and how many polls failed)."""
    # The server's dependencies are an optional extra (.[serve]): only for --overload.
    import httpx  # noqa: lazy, optional extra

    from lmjax.serve.app import create_app  # noqa: lazy, optional extra
    from lmjax.serve.engine import warm_up as warm_up_engine  # noqa: lazy, optional extra
    from lmjax.serve.local import serve_in_thread  # noqa: lazy, optional extra

    api = create_app(generator, source=source, max_slots=max_slots, max_queue=max_queue)
    warm_up_engine(api.state.engine, log=lambda s: None)
    statuses: dict[str, int] = {}
    health = {"polls": 0, "failed": 0, "slowest_s": 0.0}

    async def one(http):
        body = {"model": "lmjax", "prompt": "x" * 8,
                "max_tokens": min(new_tokens, generator.block_size - 8)}
        try:
            r = await http.post("/v1/completions", json=body)
            key = str(r.status_code)
        except httpx.HTTPError as e:
            key = type(e).__name__
        statuses[key] = statuses.get(key, 0) + 1

    async def poll(http, stop):
        while not stop.is_set():
            t = time.perf_counter()
            try:
                ok = (await http.get("/health", timeout=5)).status_code == 200
            except httpx.HTTPError:
                ok = False
            health["polls"] += 1
            health["failed"] += not ok
            health["slowest_s"] = max(health["slowest_s"], time.perf_counter() - t)
            await asyncio.sleep(0.05)

    async def run(url):
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=requests + 8)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
            poller = asyncio.create_task(poll(http, stop))
            await asyncio.gather(*(one(http) for _ in range(requests)))
            stop.set()
            await poller

    with serve_in_thread(api) as url:
        t = time.perf_counter()
        asyncio.run(run(url))
        seconds = time.perf_counter() - t
    return {"statuses": statuses, "seconds": seconds, **{f"health_{k}": v
                                                         for k, v in health.items()}}
