"""GRPO's rollouts: G samples of each prompt in one batch against the same requests decoded one
at a time, in generated tokens per second.

    python benchmarks/rollout_speed.py                       # 8 prompts x 8 samples, 24 tokens
    python benchmarks/rollout_speed.py --prompts=8 --samples=8 --new_tokens=24 --repeats=3
    python benchmarks/rollout_speed.py --workdir=runs/qa-sft  # a trained run's model

Both sides call the function GRPO's train step samples with (lmjax.tasks.grpo.sample: the one
decoder's prefill and jitted while_loop, a key per row), compiled once per batch shape before
timing: batched, all prompts x samples rows in one call; one at a time, one row per call. A
row's tokens do not depend on the rows beside it, and the script checks that both sides
generated the same tokens. The model is configs/sft.py's default (4 layers, d=128, context
256, vocabulary 2,048) with random weights, or a run's (--workdir); prompts of --prompt_len
random tokens and no stop sequence, so every row decodes --new_tokens tokens. The load average
is printed beside the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from lmjax.config import load_config  # noqa: E402
from lmjax.models import decoding as dec  # noqa: E402
from lmjax.models.gpt import GPT, GPTConfig  # noqa: E402
from lmjax.tasks.grpo import row_keys, sample  # noqa: E402
from lmjax.train.restore import load_run  # noqa: E402


def model_and_params(workdir: str, vocab_size: int):
    if workdir:
        _, task, state = load_run(workdir)
        model, params = task.plain_model(jax.device_get(state.params))
        return model, jax.tree.map(jnp.asarray, params)
    m = load_config("configs/sft.py").model
    cfg = GPTConfig.from_section(m).with_vocab(vocab_size)
    model = GPT(cfg)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 8), jnp.int32))["params"])
    return model, params


def timed(fn, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn())  # compiled (and warmed up) outside the timing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=8, help="G: samples per prompt")
    p.add_argument("--prompt_len", type=int, default=32)
    p.add_argument("--new_tokens", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3, help="timed calls (median) per side")
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--workdir", default="", help="a run's model instead of random weights")
    a = p.parse_args()

    model, params = model_and_params(a.workdir, a.vocab_size)
    rows = a.prompts * a.samples
    rng = np.random.default_rng(0)
    vocab = model.cfg.vocab_size
    prompts = np.repeat(rng.integers(1, vocab, size=(a.prompts, a.prompt_len)), a.samples, 0)
    prompts, start = jnp.asarray(prompts, jnp.int32), jnp.zeros((rows,), jnp.int32)
    keys = row_keys(jax.random.PRNGKey(1), rows)
    stops = jnp.full((4, 8), dec.NEVER, jnp.int32)  # none: every row runs to --new_tokens

    def batched():
        return sample(model, params, prompts, start, keys, stops, 1.0,
                      new_tokens=a.new_tokens)

    def one_at_a_time():
        return [sample(model, params, prompts[i:i + 1], start[i:i + 1], keys[i:i + 1], stops,
                       1.0, new_tokens=a.new_tokens) for i in range(rows)]

    t_batch, out_batch = timed(batched, a.repeats)
    t_one, out_one = timed(one_at_a_time, a.repeats)
    same = np.array_equal(np.asarray(out_batch), np.concatenate([np.asarray(o) for o in out_one]))
    tokens = rows * a.new_tokens
    load = os.getloadavg()
    print(f"model: {model.cfg.num_layers} layers, d={model.cfg.d_model}, vocab {vocab}, "
          f"{'random weights' if not a.workdir else a.workdir}; {jax.devices()[0].device_kind}")
    print(f"requests: {a.prompts} prompts x {a.samples} samples, {a.prompt_len} prompt tokens, "
          f"{a.new_tokens} new tokens each ({tokens} tokens), temperature 1")
    print(f"batched (one call of {rows} rows): {t_batch * 1e3:.1f} ms, "
          f"{tokens / t_batch:,.0f} tokens/s")
    print(f"one at a time ({rows} calls of 1 row): {t_one * 1e3:.1f} ms, "
          f"{tokens / t_one:,.0f} tokens/s")
    print(f"speed-up: {t_one / t_batch:.1f}x; same tokens on both sides: {same}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
