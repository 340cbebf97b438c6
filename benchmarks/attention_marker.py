"""Attention rollout on a synthetic marker task (issue 19 part 4): does the rollout of a
trained BERT classifier point at the one token that decides the label?

    python benchmarks/attention_marker.py                 # about a minute on 2 cores
    python benchmarks/attention_marker.py --steps=600 --layers=3

Each sequence is [CLS] + 6..14 random filler tokens + [SEP] + [PAD]s, with one filler replaced
by a marker token, A or B; the label is which marker it is. A tiny BERT classifier (pooling
the [CLS] position, lmjax/models/bert.py) is trained on fresh sequences with Adam; then on
held-out sequences the attention maps are captured with sow (lmjax/explain/attention.py) and
rolled out (Abnar & Zuidema 2020). A hit: the argmax of the rollout row of [CLS] (the position
the classifier pools), over the passage's own tokens (not [CLS] or [SEP], which the residual
term and the separator's role favour whatever the input), is the marker's position.
Target: >= 90% hits. Also printed: the same with [CLS]/[SEP] allowed, and the last layer's
raw attention (heads averaged) for comparison.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmjax.explain import render
from lmjax.explain.attention import attention_maps, rollout
from lmjax.explain.text import token_integrated_gradients
from lmjax.models import bert

PAD, CLS, SEP, A, B = 0, 1, 2, 3, 4  # fillers: 5 .. vocab-1


def sequences(rng: np.random.Generator, n: int, seq_len: int, vocab: int):
    """(tokens (n, seq_len), labels (n,), marker positions (n,), lengths (n,))."""
    tokens = np.full((n, seq_len), PAD, np.int32)
    labels = rng.integers(0, 2, n)
    lengths = rng.integers(6, seq_len - 1, n)  # filler count
    where = np.zeros(n, np.int32)
    for i, k in enumerate(lengths):
        tokens[i, 0] = CLS
        tokens[i, 1:k + 1] = rng.integers(5, vocab, k)
        tokens[i, k + 1] = SEP
        where[i] = 1 + rng.integers(0, k)
        tokens[i, where[i]] = A if labels[i] == 0 else B
    return tokens, labels.astype(np.int32), where, lengths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--d_model", type=int, default=32)
    p.add_argument("--seq_len", type=int, default=16)
    p.add_argument("--vocab", type=int, default=50)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pictures", default="", help="a folder for explain_marker_*.png: one "
                   "example's attention per layer and head, rollouts, token IG")
    args = p.parse_args()

    cfg = bert.BertConfig(vocab_size=args.vocab, block_size=args.seq_len,
                          num_layers=args.layers, num_heads=args.heads, d_model=args.d_model,
                          mlp_ratio=2, dropout=0.0, use_bias=True, dtype="float32",
                          param_dtype="float32", attention="auto", type_vocab_size=2,
                          layer_norm_eps=1e-12, pad_id=PAD, pooling="cls", num_classes=2)
    model = bert.Classifier(cfg)
    rng = np.random.default_rng(args.seed)
    params = jax.jit(model.init)(jax.random.key(args.seed),
                                 jnp.zeros((1, args.seq_len), jnp.int32))["params"]
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        def loss(p):
            logits = model.apply({"params": p}, x, deterministic=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    start = time.time()
    for i in range(args.steps):
        x, y, _, _ = sequences(rng, args.batch, args.seq_len, args.vocab)
        params, opt, value = step(params, opt, jnp.asarray(x), jnp.asarray(y))
        if (i + 1) % 100 == 0:
            print(f"step {i + 1}: loss {float(value):.4f}")
    train_s = time.time() - start

    x, y, where, lengths = sequences(np.random.default_rng(args.seed + 1), args.examples,
                                     args.seq_len, args.vocab)
    logits, maps = jax.jit(lambda p, t: (
        model.apply({"params": p}, t), attention_maps(model, {"params": p}, t)))(params, x)
    accuracy = float((np.asarray(logits).argmax(-1) == y).mean())
    cls_row = np.asarray(rollout(maps))[:, 0, :]            # (n, T): what [CLS] draws on
    last = np.asarray(maps[-1].mean(1))[:, 0, :]            # last layer, heads averaged
    positions = np.arange(args.seq_len)[None]
    passage = (positions >= 1) & (positions <= lengths[:, None])  # fillers and the marker
    real = positions <= lengths[:, None] + 1                       # with [CLS] and [SEP]

    def hits(row, allowed):
        return float((np.where(allowed, row, -np.inf).argmax(-1) == where).mean())

    print(f"trained {args.steps} steps of {args.batch} in {train_s:.1f}s; held-out accuracy "
          f"{accuracy:.4f} on {args.examples} sequences")
    print(f"rollout of [CLS], argmax over the passage (not [CLS]/[SEP]): marker hit rate "
          f"{hits(cls_row, passage):.4f} (target >= 0.90)")
    print(f"rollout of [CLS], argmax over every real token: {hits(cls_row, real):.4f}")
    print(f"last layer's raw attention of [CLS] (heads averaged), over the passage: "
          f"{hits(last, passage):.4f}")
    print(f"marker's mean share of the [CLS] rollout: "
          f"{float(cls_row[np.arange(len(where)), where].mean()):.4f} (uniform over the "
          f"passage would be {float((1 / lengths).mean()):.4f})")
    predicted = jnp.asarray(np.asarray(logits).argmax(-1), jnp.int32)
    ig = np.asarray(token_integrated_gradients(model, {"params": params}, jnp.asarray(x),
                                               predicted, PAD, 32))
    print(f"token integrated gradients (from [PAD]), argmax |IG| over the passage: "
          f"{hits(np.abs(ig), passage):.4f}")
    if args.pictures:
        _pictures(args.pictures, x, np.asarray(maps), ig, lengths, np.asarray(predicted))


def _pictures(folder: str, x, maps, ig, lengths, predicted) -> None:
    import os

    def words(row, n):
        return ["[CLS]" if t == CLS else "[SEP]" if t == SEP else "A" if t == A else
                "B" if t == B else f"w{t}" for t in row[:n + 2]]

    n = int(lengths[0])
    with open(os.path.join(folder, "explain_marker_attention.png"), "wb") as f:
        f.write(render.attention_grid(maps[:, 0, :, :n + 2, :n + 2], words(x[0], n),
                                      "marker task: attention per layer and head "
                                      "(rows: queries)"))
    k = 4
    with open(os.path.join(folder, "explain_marker_rollout.png"), "wb") as f:
        f.write(render.rollout_grid(
            [np.asarray(rollout(maps[:, i:i + 1]))[0, :lengths[i] + 2, :lengths[i] + 2]
             for i in range(k)], [words(x[i], lengths[i]) for i in range(k)],
            [f"sequence {i}, label {'AB'[predicted[i]]}" for i in range(k)],
            "marker task: attention rollout"))
    with open(os.path.join(folder, "explain_marker_ig.png"), "wb") as f:
        f.write(render.text_png([(words(x[i], lengths[i]), ig[i, :lengths[i] + 2],
                                  f"sequence {i}: predicted {'AB'[predicted[i]]}; token "
                                  "integrated gradients")
                                 for i in range(6)], width=70))


if __name__ == "__main__":
    main()
