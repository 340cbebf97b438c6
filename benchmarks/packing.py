"""Packing vs padding for SFT: real (non-padding) training tokens per second on the QA set.

    python benchmarks/packing.py                                   # tokenizer of runs/qa-base
    python benchmarks/packing.py --tokenizer_file=runs/qa-base/tokenizer.json --rounds=3
    lmjax qa_data --reading --out=runs/qa_reading
    python benchmarks/packing.py --train_file=runs/qa_reading/train.jsonl --pack_lens=256

Both layouts train the same model (configs/sft.py: 4 layers, d=128, context 256) on the same
examples with the same jitted step (forward, backward, AdamW), and see about the same number of
positions per step:
  padded  one example per row, every row as long as the longest example in the set
          (--pad_multiple=64 rounds that up, as transformers' pad_to_multiple_of does)
  packed  rows of the full context, examples back to back with segment ids
Rounds alternate padded and packed steps, so that a machine shared with other work slows both
alike; the figures are the median over rounds. Tokens counted are the examples' own tokens
(positions with a segment id), never padding.
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
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from lmjax.config import load_config  # noqa: E402
from lmjax.data import sft  # noqa: E402
from lmjax.tasks import make_task  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer_file", default="runs/qa-base/tokenizer.json")
    p.add_argument("--train_file", default="",
                   help="a JSONL prompt/response set (default: the closed-book QA set)")
    p.add_argument("--pad_multiple", type=int, default=1,
                   help="padded rows rounded up to a multiple of this (transformers' "
                        "pad_to_multiple_of; 1: exactly the longest example)")
    p.add_argument("--rows", type=int, default=16, help="packed rows per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per layout per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pack_lens", default="256,128",
                   help="packed row lengths to measure (each one a layout; at most the context)")
    args = p.parse_args()

    cfg = load_config("configs/sft.py")
    cfg.data.tokenizer_file = args.tokenizer_file
    if args.train_file:
        cfg.data.update(name="jsonl", train_file=args.train_file)
    task = make_task(cfg, log=lambda s: None)
    exs = task.data["train"]
    seq = task.seq_len
    longest = max(len(e.tokens) - 1 for e in exs)
    pad_len = min(seq, -(-longest // args.pad_multiple) * args.pad_multiple)
    padded_rows = max(1, round(args.rows * seq / pad_len))  # about the same positions per step
    rng = np.random.default_rng(0)
    order = rng.permutation(len(exs))
    layouts = {"padded": (sft.rows([exs[i] for i in order], pad_len), padded_rows)}
    print(f"{len(exs)} QA examples, mean {np.mean([len(e.tokens) for e in exs]):.1f} tokens, "
          f"longest {longest + 1}; padded: {padded_rows} rows x {pad_len} per step")
    for n in map(int, args.pack_lens.split(",")):
        groups = sft.pack_groups([len(e.tokens) for e in exs], n, order)
        rows = args.rows * seq // n
        layouts[f"packed{n}"] = (sft.pack([[exs[i] for i in g] for g in groups], n), rows)
        print(f"packed{n}: {rows} rows x {n} per step ({len(groups)} rows hold the set, "
              f"{len(exs) / len(groups):.1f} examples a row)")

    params = nn.meta.unbox(task.init_variables(jax.random.PRNGKey(0))["params"])
    tx = optax.adamw(1e-3)

    @jax.jit
    def step(params, opt, batch):
        loss, grads = jax.value_and_grad(
            lambda p: task.loss(p, {}, batch, jax.random.PRNGKey(0))[0])(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    states = {k: (params, tx.init(params)) for k in layouts}

    def batch_at(name, i):
        rows, b = layouts[name]
        idx = np.arange(i * b, (i + 1) * b) % len(rows["inputs"])
        return {k: jnp.asarray(v[idx]) for k, v in rows.items()}

    for name in layouts:  # compile outside the timing
        p_, o_ = states[name]
        jax.block_until_ready(step(p_, o_, batch_at(name, 0)))
    rates = {k: [] for k in layouts}
    cursor = {k: 1 for k in layouts}
    for r in range(args.rounds):
        for name in layouts:
            p_, o_ = states[name]
            batches = [batch_at(name, cursor[name] + i) for i in range(args.steps)]
            cursor[name] += args.steps
            real = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
            t = time.perf_counter()
            for b in batches:
                p_, o_, loss = step(p_, o_, b)
            jax.block_until_ready(loss)
            seconds = time.perf_counter() - t
            states[name] = (p_, o_)
            rates[name].append(real / seconds)
            print(f"round {r} {name}: {real} real tokens in {seconds:.2f}s = "
                  f"{real / seconds:,.0f} tokens/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name in layouts:
        print(f"median real tokens/s {name}: {med[name]:,.0f} ({med[name] / med['padded']:.2f}x "
              "padded)")


if __name__ == "__main__":
    main()
