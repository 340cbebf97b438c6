"""GRPO's rollouts: G samples of each prompt in one batch against the same requests decoded one
at a time, in generated tokens per second; with a GRPO config, also its whole train step.

    python benchmarks/rollout_speed.py                       # 8 prompts x 8 samples, 24 tokens
    python benchmarks/rollout_speed.py --prompts=8 --samples=8 --new_tokens=24 --repeats=3
    python benchmarks/rollout_speed.py --workdir=runs/qa-sft  # a trained run's model
    # a GRPO config's model (random weights) and shapes; --step also times its train step
    lmjax addition_data --out=runs/add-qwen3 --vocab_size=151936
    python benchmarks/rollout_speed.py --config=configs/grpo.py:qwen3_0_6b --step --nosingle \\
        --config.data.train_file=runs/add-qwen3/train.jsonl \\
        --config.data.val_file=runs/add-qwen3/val.jsonl \\
        --config.data.tokenizer_file=runs/add-qwen3/tokenizer.json

Both sides call the function GRPO's train step samples with (lmjax.tasks.grpo.sample: the one
decoder's prefill and jitted while_loop, a key per row), compiled once per batch shape before
timing: batched, all prompts x samples rows in one call; one at a time, one row per call
(--nosingle leaves it out). A row's tokens do not depend on the rows beside it, and the script
checks that both sides generated the same tokens. The model is configs/sft.py's default (4
layers, d=128, context 256, vocabulary 2,048) with random weights, a run's (--workdir), or a
--config's `model` section with random weights (lmjax/serve/benchmark.py: model_from_config,
so any family); prompts of --prompt_len random tokens and no stop sequence, so every row
decodes --new_tokens tokens.

With a GRPO --config, the shapes are the config's: rows train.batch_size (rl.num_generations
samples of each prompt), rl.prompt_length prompt tokens, sft.max_answer_tokens new tokens, at
rl.temperature. --step then times the config's whole train step the way `lmjax bench` does
(lmjax/train/benchmark.py: rollouts, rewards, reference and policy log-probabilities, backward,
optimizer) and reports the update as the step less the batched rollout. The load average is
printed beside the figures: the machine is shared.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from lmjax.config import load_config  # noqa: E402
from lmjax.models import decoding as dec  # noqa: E402
from lmjax.models.gpt import GPT, GPTConfig  # noqa: E402
from lmjax.serve.benchmark import model_from_config  # noqa: E402
from lmjax.tasks.grpo import row_keys, sample  # noqa: E402
from lmjax.train.benchmark import benchmark  # noqa: E402
from lmjax.train.restore import load_run  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config whose model to build with "
                                          "random weights; a GRPO config's shapes too.",
                                          lock_config=True)
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts (a GRPO --config: its own).")
_SAMPLES = flags.DEFINE_integer("samples", 8, "G: samples per prompt (a GRPO --config: its own).")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens (a GRPO --config: its own).")
_NEW = flags.DEFINE_integer("new_tokens", 24, "New tokens per row (a GRPO --config: its own).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (median) per side.")
_VOCAB = flags.DEFINE_integer("vocab_size", 2048, "The default model's vocabulary.")
_WORKDIR = flags.DEFINE_string("workdir", "", "A run's model instead of random weights.")
_SINGLE = flags.DEFINE_bool("single", True, "Also decode the rows one at a time.")
_STEP = flags.DEFINE_bool("step", False, "With a GRPO --config: also time its train step.")
_STEPS = flags.DEFINE_integer("steps", 5, "--step: timed steps (after --warmup).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "--step: untimed steps after compilation.")


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


def main(argv) -> None:
    del argv
    cfg = _CONFIG.value
    grpo = cfg is not None and cfg.get("task") == "grpo"
    if _STEP.value and not grpo:
        raise app.UsageError("--step times a GRPO config's train step: give --config=<a GRPO "
                             "config>, e.g. configs/grpo.py:qwen3_0_6b.")
    if cfg is not None:
        model, params, _, source = model_from_config(cfg)
    else:
        model, params = model_and_params(_WORKDIR.value, _VOCAB.value)
        source = _WORKDIR.value or "random weights"
    prompts_n, samples, prompt_len, new, temperature = (
        _PROMPTS.value, _SAMPLES.value, _PROMPT_LEN.value, _NEW.value, 1.0)
    if grpo:
        samples = cfg.rl.num_generations
        prompts_n = cfg.train.batch_size // samples
        prompt_len = cfg.rl.prompt_length or prompt_len
        new, temperature = cfg.sft.max_answer_tokens, cfg.rl.temperature
    rows = prompts_n * samples
    rng = np.random.default_rng(0)
    vocab = model.cfg.vocab_size
    prompts = np.repeat(rng.integers(1, vocab, size=(prompts_n, prompt_len)), samples, 0)
    prompts, start = jnp.asarray(prompts, jnp.int32), jnp.zeros((rows,), jnp.int32)
    keys = row_keys(jax.random.PRNGKey(1), rows)
    stops = jnp.full((4, 8), dec.NEVER, jnp.int32)  # none: every row runs to `new` tokens

    def batched():
        return sample(model, params, prompts, start, keys, stops, temperature, new_tokens=new)

    def one_at_a_time():
        return [sample(model, params, prompts[i:i + 1], start[i:i + 1], keys[i:i + 1], stops,
                       temperature, new_tokens=new) for i in range(rows)]

    t_batch, out_batch = timed(batched, _REPEATS.value)
    tokens = rows * new
    print(f"model: {model.cfg.num_layers} layers, d={model.cfg.d_model}, vocab {vocab}, "
          f"{jnp.dtype(model.cfg.dtype).name}, {source}; {jax.devices()[0].device_kind}")
    print(f"requests: {prompts_n} prompts x {samples} samples, {prompt_len} prompt tokens, "
          f"{new} new tokens each ({tokens} tokens), temperature {temperature:g}")
    print(f"batched (one call of {rows} rows): {t_batch * 1e3:.1f} ms, "
          f"{tokens / t_batch:,.0f} tokens/s", flush=True)
    if _SINGLE.value:
        t_one, out_one = timed(one_at_a_time, _REPEATS.value)
        same = np.array_equal(np.asarray(out_batch),
                              np.concatenate([np.asarray(o) for o in out_one]))
        print(f"one at a time ({rows} calls of 1 row): {t_one * 1e3:.1f} ms, "
              f"{tokens / t_one:,.0f} tokens/s")
        print(f"speed-up: {t_one / t_batch:.1f}x; same tokens on both sides: {same}")
    if _STEP.value:
        r = benchmark(cfg, _STEPS.value, _WARMUP.value)
        step_s, positions = r["step_ms"] / 1e3, rows * (prompt_len + new)
        update_s = step_s - t_batch
        peak = r["peak_memory_GiB"]
        print(f"GRPO step: {r['step_ms']:.1f} ms (compile {r['compile_s']:.1f} s), "
              f"{positions / step_s:,.0f} tokens/s over {rows} rows x {prompt_len + new} "
              f"positions; peak memory {'n/a' if peak is None else f'{peak:.2f} GiB'}")
        print(f"update (the step less the batched rollout: rewards, reference and policy "
              f"log-probabilities, backward, optimizer): {update_s * 1e3:.1f} ms, "
              f"{positions / max(update_s, 1e-9):,.0f} tokens/s; rollout "
              f"{t_batch / step_s:.0%} of the step")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    app.run(main)
