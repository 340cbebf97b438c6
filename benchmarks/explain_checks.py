"""Every evaluation target of the explanations (issue 19 part 4, docs/explain.md), measured on
a trained Fashion-MNIST CNN, printed as figures.

    # the trained model, and one trained on shuffled labels (fewer steps):
    lmjax train --config=configs/fashion_mnist.py:cnn --workdir=runs/cnn
    python benchmarks/explain_checks.py shuffled_data --data=runs/shuffled-data
    lmjax train --config=configs/fashion_mnist.py:cnn --workdir=runs/cnn-shuffled \\
        --config.data.dir=runs/shuffled-data --config.data.val_size=500 \\
        --config.data.crop_padding=0 --config.data.flip=False --config.model.dropout=0 \\
        --config.train.label_smoothing=0 --config.train.num_steps=800 \\
        --config.train.batch_size=64 --config.train.early_stopping_metric=''
    # the checks:
    python benchmarks/explain_checks.py images --workdir=runs/cnn --shuffled=runs/cnn-shuffled
    # integrated gradients from black, blurred and uniform-noise baselines; Grad-CAM per layer:
    python benchmarks/explain_checks.py ig_baselines --workdir=runs/cnn \
        --shuffled=runs/cnn-shuffled --examples=200 --cascade_examples=50
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
import time

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.explain import checks
from lmjax.explain import gradients as g
from lmjax.explain.images import probabilities_fn
from lmjax.train.restore import load_setup

DEBIAN = "/usr/share/datasets/fashion-mnist"


def shuffled_data(out: str, train_examples: int) -> None:
    """Fashion-MNIST IDX files whose first `train_examples` training labels are permuted (the
    test split untouched): what the shuffled-label model of Adebayo et al. trains on."""
    from lmjax.data.images import read_idx

    os.makedirs(out, exist_ok=True)
    x = read_idx(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz"))[:train_examples]
    y = read_idx(os.path.join(DEBIAN, "train-labels-idx1-ubyte.gz"))[:train_examples]
    y = np.random.default_rng(0).permutation(y)
    with gzip.open(os.path.join(out, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, *x.shape) + x.astype(np.uint8).tobytes())
    with gzip.open(os.path.join(out, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes())
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(os.path.join(DEBIAN, name), out)
    print(f"wrote {train_examples} training images with permuted labels to {out}")


def load(workdir: str):
    """(Classifier, task) of a saved run's latest checkpoint."""
    s, state = load_setup(workdir, best=False)
    return g.Classifier(variables={"params": state.params, **state.model_state},
                        module=s.task.model), s.task


def attributions(model, x, target, method, steps=64, chunk=100):
    out = []
    base = g.to_input(np.zeros((1, 28, 28, 1), np.uint8))
    for i in range(0, len(x), chunk):
        xs, ts = x[i:i + chunk], target[i:i + chunk]
        if method == "gradient":
            a = g.saliency(model, xs, ts)
        elif method == "ig":
            a = g.integrated_gradients(model, xs, ts, base, steps=steps)
        elif method == "gradcam":
            a = g.gradcam(model, xs, ts)
        else:
            a = g.guided_backprop(model, xs, ts)
        out.append(np.asarray(a))
    return np.concatenate(out)


def fmt(values) -> str:
    v = np.asarray(values)
    return f"mean {v.mean():.3f}, median {np.median(v):.3f}"


def images(args) -> None:
    model, task = load(args.workdir)
    data = task.data.test
    n = args.examples
    pixels = np.asarray(data.inputs[:n])
    x = g.to_input(pixels)
    labels = jnp.asarray(data.labels[:n], jnp.int32)
    prob = probabilities_fn(model)
    predicted = jnp.asarray(prob(pixels).argmax(-1), jnp.int32)
    print(f"model {args.workdir}: test accuracy on these {n} images "
          f"{float((predicted == labels).mean()):.4f}")
    base = g.to_input(np.zeros((1, 28, 28, 1), np.uint8))

    print("\n== integrated gradients completeness (target: median <= 1% at <= 128 steps)")
    for steps in (32, 64, 128):
        start = time.time()
        ig = attributions(model, x, predicted, "ig", steps)
        err = checks.completeness(model, x, predicted, base, ig)
        print(f"steps {steps:4d}: median relative error {np.median(err) * 100:.3f}%, "
              f"90th percentile {np.percentile(err, 90) * 100:.3f}% ({time.time() - start:.1f}s)")

    methods = ("gradient", "ig", "gradcam", "guided_backprop")
    print("\n== cascading randomization, logits down (target: Spearman of |attr| <= 0.2 for "
          "gradient, IG, Grad-CAM when fully randomized; guided backprop should fail)")
    trained = {m: attributions(model, x, labels, m) for m in methods}
    stages = checks.cascade(model, jax.random.key(args.seed), pixels)
    sub = slice(0, args.cascade_examples)
    print("randomized down to | " + " | ".join(methods))
    for layer, m_rand in stages:
        full = layer == stages[-1][0]
        cut = slice(None) if full else sub
        row = [np.mean(checks.spearman(trained[m][cut],
                                       attributions(m_rand, x[cut], labels[cut], m)))
               for m in methods]
        print(f"{layer:18s} | " + " | ".join(f"{r:.3f}" for r in row) +
              ("   (all layers, all images)" if full else ""))

    if args.shuffled:
        print("\n== model trained on shuffled labels (target: Spearman <= 0.3)")
        shuffled, _ = load(args.shuffled)
        for m in methods:
            r = checks.spearman(trained[m], attributions(shuffled, x, labels, m))
            print(f"{m:16s}: {fmt(r)}")

    print("\n== deletion / insertion, class probability, 28 steps of 28 pixels "
          "(targets: deletion AUC <= 0.7x random, insertion >= 1.3x random)")
    key = jax.random.key(args.seed + 1)
    rand_del, rand_ins = checks.deletion_insertion(model, x, predicted, None, base, key)
    print(f"random   : deletion AUC {rand_del.mean():.4f}, insertion AUC {rand_ins.mean():.4f}")
    for m in ("ig", "gradcam", "gradient"):
        a = attributions(model, x, predicted, m)
        d, i = checks.deletion_insertion(model, x, predicted, a, base)
        print(f"{m:9s}: deletion AUC {d.mean():.4f} ({d.mean() / rand_del.mean():.2f}x random), "
              f"insertion AUC {i.mean():.4f} ({i.mean() / rand_ins.mean():.2f}x random)")

    print(f"\n== LIME, 1,000 samples, 5 seeds, {args.lime_images} images (targets: median "
          "weighted R2 >= 0.7, top-5 Jaccard >= 0.8, <= 1 s/image)")
    prob(np.repeat(pixels[:1], 1000, 0))  # compile the 1,000-sample batch once
    for segments in ("grid:7", "grid:4"):
        jac, r2, secs = [], [], []
        for i in range(args.lime_images):
            j, r, s = checks.lime_stability(pixels[i], int(predicted[i]), prob,
                                            segments=segments)
            jac.append(j), r2.append(r), secs.extend(s)
        print(f"{segments}: median R2 {np.median(r2):.3f}; top-5 Jaccard across seeds "
              f"{fmt(jac)}; seconds per image: median {np.median(secs):.2f}, "
              f"max {np.max(secs):.2f}")


def ig_baselines(args) -> None:
    """Integrated gradients' checks for each --baselines kind (black, blur, uniform), and
    Grad-CAM's deletion / insertion at each conv block."""
    model, task = load(args.workdir)
    n = args.examples
    pixels = np.asarray(task.data.test.inputs[:n])
    x = g.to_input(pixels)
    labels = jnp.asarray(task.data.test.labels[:n], jnp.int32)
    predicted = jnp.asarray(probabilities_fn(model)(pixels).argmax(-1), jnp.int32)
    black = g.to_input(np.zeros((1, 28, 28, 1), np.uint8))
    key = jax.random.key(args.seed + 2)  # the same baseline draws for every model

    def ig(m, xs, ts, kind, steps=64):
        out = []
        for i in range(0, len(xs), 100):
            out.append(np.asarray(g.integrated_gradients_from(
                m, xs[i:i + 100], ts[i:i + 100], kind, jax.random.fold_in(key, i), steps,
                args.baseline_samples)))
        return np.concatenate(out)

    stages = checks.cascade(model, jax.random.key(args.seed), pixels)
    shuffled = load(args.shuffled)[0] if args.shuffled else None
    rand_del, rand_ins = checks.deletion_insertion(model, x, predicted, None, black,
                                                   jax.random.key(args.seed + 1))
    print(f"model {args.workdir}, {n} test images; random order: deletion AUC "
          f"{rand_del.mean():.4f}, insertion AUC {rand_ins.mean():.4f}")
    for kind in args.baselines.split(","):
        start = time.time()
        draws = args.baseline_samples if kind == "uniform" else 1
        print(f"\n== IG from a {kind} baseline ({draws} draw{'s' * (draws > 1)})")
        for steps in (64, 128):
            a = ig(model, x, predicted, kind, steps)
            base = jnp.concatenate([g.ig_baselines(x[i:i + 100], kind,
                                                   jax.random.fold_in(key, i),
                                                   args.baseline_samples)
                                    for i in range(0, n, 100)], axis=1)
            err = checks.completeness(model, x, predicted, base, a)
            print(f"completeness, {steps} steps: median {np.median(err) * 100:.3f}%, 90th "
                  f"percentile {np.percentile(err, 90) * 100:.3f}% (target median <= 1%)")
        trained = ig(model, x, labels, kind)
        sub = slice(0, args.cascade_examples)
        row = []
        for layer, m_rand in stages:
            full = layer == stages[-1][0]
            cut = slice(None) if full else sub
            r = checks.spearman(trained[cut], ig(m_rand, x[cut], labels[cut], kind))
            row.append(f"{layer} {np.mean(r):.3f}")
        print("cascading randomization, Spearman of |IG| (target <= 0.2 at the last): " +
              " / ".join(row))
        if shuffled is not None:
            r = checks.spearman(trained, ig(shuffled, x, labels, kind))
            print(f"shuffled-label model, Spearman of |IG|: {fmt(r)} (target <= 0.3)")
        d, i = checks.deletion_insertion(model, x, predicted, ig(model, x, predicted, kind),
                                         black)
        print(f"deletion AUC {d.mean():.4f} ({d.mean() / rand_del.mean():.2f}x random), "
              f"insertion AUC {i.mean():.4f} ({i.mean() / rand_ins.mean():.2f}x random) "
              f"({time.time() - start:.0f}s)")
    print("\n== Grad-CAM deletion / insertion at each conv block")
    for layer in model.conv_layers:
        a = np.concatenate([np.asarray(g.gradcam(model, x[i:i + 100], predicted[i:i + 100],
                                                 layer)) for i in range(0, n, 100)])
        d, i = checks.deletion_insertion(model, x, predicted, a, black)
        print(f"{layer}: deletion AUC {d.mean():.4f} ({d.mean() / rand_del.mean():.2f}x "
              f"random), insertion AUC {i.mean():.4f} ({i.mean() / rand_ins.mean():.2f}x random)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("shuffled_data", "images", "ig_baselines"))
    p.add_argument("--workdir", default="runs/F-cnn")
    p.add_argument("--shuffled", default="")
    p.add_argument("--data", default="runs/F-shuffled-data")
    p.add_argument("--train_examples", type=int, default=3500)
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--cascade_examples", type=int, default=100)
    p.add_argument("--lime_images", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", default="black,blur,uniform")
    p.add_argument("--baseline_samples", type=int, default=4)
    args = p.parse_args()
    if args.stage == "shuffled_data":
        shuffled_data(args.data, args.train_examples)
    elif args.stage == "ig_baselines":
        ig_baselines(args)
    else:
        images(args)


if __name__ == "__main__":
    main()
