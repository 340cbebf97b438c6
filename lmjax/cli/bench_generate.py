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

import jax
from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import fail
from lmjax.infer.generator import Generator
from lmjax.infer.load import load
from lmjax.serve.benchmark import bench_server, model_from_config, time_generation, time_hf

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
