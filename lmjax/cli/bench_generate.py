"""Benchmark generation: tokens/s and time to first token, optionally the HTTP server, and
Hugging Face `generate` on the same weights.

    # a trained run (the CPU default), batch 1 and 32, prompt 32, 256 greedy tokens
    lmjax bench_generate --workdir=runs/gpt
    # GPT-2 124M with random weights (no data needed), against transformers on the same weights
    lmjax bench_generate --config=configs/gpt.py:gpt2_124m --hf_compare
    # a decoder family (Qwen3-0.6B's shape, float32) against its bound and Qwen3ForCausalLM
    lmjax bench_generate --config=configs/llama.py:qwen3_0_6b --config.model.dtype=float32 \
        --batch_sizes=1,8 --new_tokens=64 --bound --hf_compare
    # batch 1 against the memory-bandwidth bound this run measures, and the int8 weights
    lmjax bench_generate --config=configs/gpt.py:gpt2_124m --batch_sizes=1 --bound \
        --int8 --hf_compare
    # the server: requests/s and p50/p99 latency under 16 concurrent clients
    lmjax bench_generate --workdir=runs/gpt --server --clients=16
    # the slot engine against the static batcher, same run: 32 streaming clients, prompts of
    # 16-256 tokens, 8-256 new tokens (a context of 512 fits them); then 200 requests at once
    # against a queue limit of 50
    lmjax bench_generate --config=configs/gpt.py --config.model.block_size=512 \
        --batch_sizes= --server --clients=32 --mixed --overload

Decoding is timed on the device path (prefill, then the jitted decode loop) after a warm-up
run that compiles it; the generated tokens are fetched to the host inside the timing. Time to
first token is the prefill of the batch, including the first sampled token on the host.
--hf_compare writes the same weights as Hugging Face's (what `lmjax convert to_hf` writes),
loads them with AutoModelForCausalLM (GPT2LMHeadModel, LlamaForCausalLM, Qwen3ForCausalLM, ...)
and times its `generate` on the same prompts, greedy with its KV cache, in the model's compute
dtype on a GPU (float32 on a CPU); it prints how many leading tokens both generated alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import fail
from lmjax.infer import int8
from lmjax.infer.load import load
from lmjax.models.generator import Generator
from lmjax.serve.benchmark import (bench_overload, bench_server, bytes_per_token, hf_model,
                                   model_from_config, read_bandwidth, same_prefix,
                                   time_generation, time_hf)

_CONFIG = config_flags.DEFINE_config_file("config", None, "With random weights: the config "
                                          "whose model to build.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run (or int8 export) instead.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes to time.")
_PROMPT = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens per row.")
_NEW = flags.DEFINE_integer("new_tokens", 256, "Greedy tokens per row (capped by the context).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per batch size (the median counts).")
_HF = flags.DEFINE_bool("hf_compare", False, "Also time transformers' generate (PyTorch, KV "
                        "cache, the model's compute dtype on a GPU) on the same weights and "
                        "prompts: GPT2LMHeadModel, or the decoder family's class.")
_BOUND = flags.DEFINE_bool("bound", False, "Measure the memory read bandwidth and print batch "
                           "1's bound: bandwidth / (weight + KV-cache bytes per token).")
_BOUND_GIB = flags.DEFINE_float("bound_gib", 1.0, "--bound: GiB read to measure the bandwidth "
                                "(well above the caches).")
_INT8 = flags.DEFINE_bool("int8", False, "Also time the model with int8 weights (qwix, what "
                          "lmjax quantize exports) in the same run.")
_SERVER = flags.DEFINE_bool("server", False, "Also benchmark the HTTP server on localhost.")
_CLIENTS = flags.DEFINE_integer("clients", 16, "Server: concurrent clients.")
_REQUESTS = flags.DEFINE_integer("requests", 160, "Server: requests in total.")
_SERVER_NEW = flags.DEFINE_integer("server_new_tokens", 64, "Server: new tokens per request.")
_MIXED = flags.DEFINE_bool("mixed", False, "Server: prompts of 16-256 tokens and 8-256 new "
                           "tokens per request (uniform, cut to fit the context).")
_ENGINES = flags.DEFINE_list("engines", ["slots", "static"], "Server: the engines to compare, "
                             "in this order, in the same run.")
_SLOTS = flags.DEFINE_integer("max_slots", 0, "Server: the slot engine's slots (0: --clients).")
_PREFILL = flags.DEFINE_list("prefill_tokens", ["512"], "Server: the slot engine's prompt-token "
                             "budget per step; several values time the slot engine once each "
                             "(1: one request admitted per step).")
_REHEARSE = flags.DEFINE_bool("rehearse", True, "Server: run each engine's workload once "
                              "untimed first, so that its compiles are not timed.")
_OVERLOAD = flags.DEFINE_bool("overload", False, "Also send 200 requests at once against a "
                              "queue limit of 50 (status codes, /health throughout).")


def main(args: list[str]) -> None:
    if bool(_WORKDIR.value) == bool(_CONFIG.value):
        fail("give exactly one of --workdir (a trained run) and --config (random weights).")
    if _WORKDIR.value:
        loaded = load(_WORKDIR.value)
        model, params, tokenizer, source = (loaded.model, loaded.params, loaded.tokenizer,
                                            loaded.source)
    else:
        model, params, tokenizer, source = model_from_config(_CONFIG.value)
    batches = [int(b) for b in _BATCHES.value]
    generator = Generator(model, params, tokenizer, max_batch=max(batches + [_CLIENTS.value]),
                          stop_at_eot=False)
    block = model.cfg.block_size
    new = min(_NEW.value, block - _PROMPT.value)
    print(f"Model: {source}; device: {jax.devices()[0].device_kind} "
          f"({jax.default_backend()}); prompt {_PROMPT.value}, {new} greedy new tokens")
    bw = None
    if _BOUND.value:
        bw = read_bandwidth(_BOUND_GIB.value)
        per_token = bytes_per_token(generator.params, model.cfg, _PROMPT.value + new)
        print(f"Memory read bandwidth: {bw['xla_bytes_per_s'] / 1e9:.1f} GB/s (jitted sum), "
              f"{bw['numpy_bytes_per_s'] / 1e9:.1f} GB/s (NumPy); batch 1 reads "
              f"{per_token / 1e6:.0f} MB per token: bound "
              f"{bw['bytes_per_s'] / per_token:,.1f} tokens/s")
    variants = [("lmjax", generator)]
    if _INT8.value:
        if any("qvalue" in jax.tree_util.keystr(p)
               for p, _ in jax.tree_util.tree_leaves_with_path(params)):
            fail("--int8: the model is already int8; give the float run.")
        qmodel, qparams = int8.quantize(model, params)
        variants.append(("int8 ", Generator(qmodel, qparams, tokenizer, max_batch=max(batches),
                                            stop_at_eot=False)))
    hf = hf_model(model.cfg, params) if _HF.value else None  # loaded once, for every batch
    for b in batches:
        fp = None
        for name, gen in variants:
            r = time_generation(gen, b, _PROMPT.value, new, _REPEATS.value)
            note = ""
            if bw and b == 1:  # each variant against the bytes its decoder holds
                own = bytes_per_token(gen.params, model.cfg, _PROMPT.value + new)
                bound = bw["bytes_per_s"] / own
                note = f"; decode at {r['decode_tokens_per_s'] / bound:.0%} of its bound"
                if gen is not generator:
                    note += f" ({bound:,.1f} tokens/s: {own / 1e6:.0f} MB per token)"
            if fp is not None:
                note += f"; {r['tokens_per_s'] / fp:.2f}x float"
            else:
                fp, tokens = r["tokens_per_s"], r["tokens"]
            print(f"{name}  batch {b:3d}: {r['tokens_per_s']:10,.0f} tokens/s "
                  f"(decode alone {r['decode_tokens_per_s']:,.0f}), time to first token "
                  f"{1e3 * r['ttft_s']:.1f} ms, {r['total_s']:.3f} s per run "
                  f"(compile {r['compile_s']:.1f} s){note}", flush=True)
        if _HF.value:
            h = time_hf(hf, model.cfg.vocab_size, b, _PROMPT.value, new, _REPEATS.value)
            same = same_prefix(tokens, h["tokens"])
            print(f"HF     batch {b:3d}: {h['tokens_per_s']:10,.0f} tokens/s, time to first "
                  f"token {1e3 * h['ttft_s']:.1f} ms ({h['device']}); lmjax is "
                  f"{fp / h['tokens_per_s']:.1f}x"
                  + (f", int8 {r['tokens_per_s'] / h['tokens_per_s']:.1f}x" if _INT8.value else "")
                  + f"; same greedy tokens: the first {same} of {new} in every row "
                  f"(HF {h['dtype']}, lmjax {jnp.dtype(model.cfg.dtype).name})", flush=True)
    if _SERVER.value:
        bad = set(_ENGINES.value) - {"slots", "static"}
        if bad:
            fail(f"--engines: unknown {sorted(bad)}; use slots and/or static.")
        new_server = min(_SERVER_NEW.value, block - 16)
        print(f"Server: {_CLIENTS.value} streaming clients, {_REQUESTS.value} requests, "
              + ("mixed prompts 16-256 and 8-256 new tokens" if _MIXED.value else
                 f"prompt 8, {new_server} new tokens")
              + (" (each engine rehearsed once first)" if _REHEARSE.value else ""))
        results = {}
        runs = [(e, int(b)) for e in _ENGINES.value
                for b in (_PREFILL.value if e == "slots" else [0])]
        for engine, budget in runs:
            run = lambda: bench_server(  # noqa: E731
                generator, _CLIENTS.value, _REQUESTS.value, new_server, source, engine=engine,
                mixed=_MIXED.value, max_slots=_SLOTS.value, prefill_tokens=max(budget, 1))
            if _REHEARSE.value:
                run()
            s = run()
            results.setdefault(engine, s)  # the comparison: the first budget's
            label = f"{engine} (prefill budget {budget})" if engine == "slots" else engine
            print(f"server {label}: {s['tokens_per_s']:8,.0f} tokens/s, "
                  f"{s['requests_per_s']:.1f} requests/s, time to first token p50 "
                  f"{1e3 * s['ttft_p50_s']:.0f} ms p99 {1e3 * s['ttft_p99_s']:.0f} ms, latency "
                  f"p50 {1e3 * s['p50_s']:.0f} ms p99 {1e3 * s['p99_s']:.0f} ms, "
                  f"{s['failures']} failed of {s['requests']}", flush=True)
        if {"slots", "static"} <= set(results):
            a, b = results["slots"], results["static"]
            print(f"slots vs static: throughput {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
                  f"p99 time to first token {a['ttft_p99_s'] / b['ttft_p99_s']:.2f} of static's")
    if _OVERLOAD.value:
        o = bench_overload(generator, source)
        print(f"overload, 200 requests at once, queue limit 50: statuses {o['statuses']}, "
              f"/health {o['health_polls']} polls, {o['health_failed']} failed, slowest "
              f"{1e3 * o['health_slowest_s']:.0f} ms ({o['seconds']:.1f} s)")
