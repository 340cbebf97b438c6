"""Explain a trained run's predictions: attribution pictures and their values as JSON.

    lmjax explain --workdir=runs/fashion_mnist-cnn --method=ig --examples=0:16
    lmjax explain --workdir=runs/fashion_mnist-cnn --method=gradcam --layer=block1
    lmjax explain --workdir=runs/fashion_mnist-cnn --method=lime --segments=grid:4

Image runs (CNN, MLP): saliency, smoothgrad, ig (integrated gradients from uniform noise),
gradcam (CNN only, at --layer), occlusion, guided_backprop, lime. For each method it writes
<out>/<method>.png (each image, its heatmap overlay, the predicted and true class),
<out>/<method>.json (the attributions) and the picture to the run's TensorBoard.
--baseline=uniform|black|blur: integrated gradients' starting image (uniform, the default,
passes the randomization sanity checks; black, the literature's, fails them on a black
background).

Text and attention (BERT text classifiers: ig, lime, attention; GPT, decoder-family (Llama,
Qwen, ...) and BERT masked-LM runs: attention):

    lmjax explain --workdir=runs/classify --method=ig --examples=0:8
    lmjax explain --workdir=runs/classify --method=lime --text="Exit, pursued by a bear."
    lmjax explain --workdir=runs/gpt --method=attention --examples=0:4 --length=32

ig: integrated gradients over the token embeddings from [PAD]'s; lime: lime's
LimeTextExplainer over the words (a removed word becomes [UNK]); both write <out>/<method>.html
(each passage coloured by its tokens' attributions, red for the class, blue against),
<out>/<method>.png (the same as a picture) and <out>/<method>.json. attention: per example
<out>/attention_<index>.png (a heatmap per layer and head) and <out>/attention_rollout.png
(attention rollout, Abnar & Zuidema 2020), the maps and rollouts in <out>/attention.json.
Examples: the validation passages of a classifier or masked-LM run, windows of --length tokens
of a language model run's validation text, or one --text. The methods and their sanity checks:
docs/explain.md.
"""

from __future__ import annotations

import json
import os
import time

import jax.numpy as jnp
import numpy as np
from absl import flags

from lmjax import rundir
from lmjax.cli.common import fail, require
from lmjax.explain import images as imagelib
from lmjax.explain import render
from lmjax.explain import sequences as seqlib
from lmjax.explain.gradients import BASELINES, DEFAULT_BASELINE, Classifier
from lmjax.models import bert, decoder, gpt
from lmjax.tasks.base import DECODES, IMAGES, MASKED_LM, TEXT_CLASSES
from lmjax.train.restore import load_setup


_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run to explain.")
_METHOD = flags.DEFINE_string("method", "ig", f"Images: one of {', '.join(imagelib.METHODS)}; "
                              "text classifiers: ig, lime, attention; language models (GPT, "
                              "Llama, ...), BERT: attention.")
_EXAMPLES = flags.DEFINE_string("examples", "0:16", "Which examples of --split, start:stop.")
_SPLIT = flags.DEFINE_string("split", "", "The split the examples come from (test, val; "
                             "default: test where the run has one, else val).")
_TEXT = flags.DEFINE_string("text", "", "Text runs: explain this passage (or prompt) instead "
                            "of --examples.")
_LENGTH = flags.DEFINE_integer("length", 32, "LM attention: tokens per window of the "
                               "validation text (at most the model's context).")
_BASELINE = flags.DEFINE_enum("baseline", DEFAULT_BASELINE, list(BASELINES), "Image "
                              "integrated gradients: start from uniform noise (--samples draws "
                              "averaged, default 4; passes the randomization checks), a black "
                              "image (the literature's; fails them on a black background) or "
                              "the image blurred.")
_OUT = flags.DEFINE_string("out", None, "Where to write the pictures and JSON "
                           "(default: <workdir>/explain).")
_LAYER = flags.DEFINE_string("layer", "", "Grad-CAM's conv block, block0..blockN-1 "
                             "(default: the last).")
_STEPS = flags.DEFINE_integer("steps", 64, "Integrated gradients: trapezoid intervals.")
_SAMPLES = flags.DEFINE_integer("samples", 0, "SmoothGrad's noisy copies (default 25) or "
                                "LIME's samples (default 1000).")
_SEGMENTS = flags.DEFINE_string("segments", "grid:4", "LIME's superpixels: grid:<pixels> or "
                                "quickshift.")
_TARGET = flags.DEFINE_string("target", "predicted", "Explain the 'predicted' or the 'true' "
                              "class.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of SmoothGrad's noise and LIME's samples.")
_LATEST = flags.DEFINE_bool("latest", False, "The latest checkpoint even if a best one exists.")


def parse_examples(spec: str, available: int) -> range:
    """'a:b' -> range(a, b), checked against the split's size."""
    start, sep, stop = spec.partition(":")
    if not sep or not start.strip().isdigit() or not stop.strip().isdigit():
        raise ValueError(f"--examples={spec!r}: give start:stop, e.g. --examples=0:16.")
    start, stop = int(start), int(stop)
    if not 0 <= start < stop <= available:
        raise ValueError(f"--examples={spec!r}: the split has {available} examples; give "
                         f"0 <= start < stop <= {available}.")
    return range(start, stop)


def run_kind(cfg, task) -> str:
    """'image', 'text' (a BERT classifier), 'lm' (a GPT or decoder-family language model) or
    'mlm': what can be explained."""
    caps = task.capabilities
    if IMAGES in caps:
        return "image"
    if TEXT_CLASSES in caps:
        return "text"
    if MASKED_LM in caps:
        return "mlm"
    if DECODES in caps and isinstance(task.model, (gpt.GPT, decoder.Decoder)):
        return "lm"
    raise ValueError(f"{cfg.task!r} runs ({type(task.model).__name__}) have nothing here to "
                     "explain: explanations are for image classifiers (Fashion-MNIST CNN or "
                     "MLP), BERT text classifiers, and attention maps of GPT, decoder-family "
                     "(Llama, Qwen, ...) and BERT models.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained run to explain.")
    method = _METHOD.value
    if method not in (*imagelib.METHODS, "attention"):
        fail(f"--method={method!r}: use one of {', '.join(imagelib.METHODS)} (images), or ig, "
             "lime, attention (text classifiers), attention (language models, BERT).")
    if _TARGET.value not in ("predicted", "true"):
        fail(f"--target={_TARGET.value!r}: use 'predicted' or 'true'.")
    s, state = load_setup(workdir, best=not _LATEST.value and rundir.has_best(workdir))
    task = s.task
    kind = run_kind(s.cfg, task)
    seqlib.check_method(kind, method, workdir)
    out = _OUT.value or os.path.join(workdir, "explain")
    if kind != "image":
        return explain_sequences(s.cfg, task, state, kind, method, workdir, out)
    if _TEXT.value:
        fail(f"--text: {workdir} is an image classifier; choose images with --examples.")
    split = _SPLIT.value or ("test" if "test" in task.splits else "val")
    model = Classifier(variables={"params": state.params, **state.model_state},
                       module=task.model)
    if split not in task.splits:
        fail(f"--split={split!r}: this run has {', '.join(task.splits)}.")
    ids = parse_examples(_EXAMPLES.value, task.num_examples(split))
    chosen = task.examples(split, np.arange(ids.start, ids.stop))
    images, labels = np.asarray(chosen["inputs"]), np.asarray(chosen["labels"])
    predicted = imagelib.probabilities_fn(model)(images).argmax(-1)
    targets = predicted if _TARGET.value == "predicted" else labels

    start = time.time()
    maps = imagelib.attribute(model, images, targets, method, steps=_STEPS.value,
                              samples=_SAMPLES.value, layer=_LAYER.value, seed=_SEED.value,
                              segments=_SEGMENTS.value, baseline=_BASELINE.value)
    seconds = time.time() - start
    names = task.class_names
    os.makedirs(out, exist_ok=True)
    titles = [f"{i}: {names[p]}" + ("" if p == y else f"\n(true {names[y]})")
              for i, p, y in zip(ids, predicted, labels)]
    png = render.image_grid(images, maps, titles, f"{method} ({split} {ids.start}:"
                            f"{ids.stop}, target: {_TARGET.value} class)")
    with open(os.path.join(out, f"{method}.png"), "wb") as f:
        f.write(png)
    record = {"method": method, "split": split, "seconds": round(seconds, 3),
              "options": {"steps": _STEPS.value, "samples": _SAMPLES.value,
                          "baseline": _BASELINE.value,
                          "layer": _LAYER.value, "segments": _SEGMENTS.value,
                          "seed": _SEED.value, "target": _TARGET.value},
              "examples": [{"index": i, "label": names[y], "predicted": names[p],
                            "target": int(t), "attribution": np.round(m, 6).tolist()}
                           for i, y, p, t, m in zip(ids, labels, predicted, targets, maps)]}
    with open(os.path.join(out, f"{method}.json"), "w") as f:
        json.dump(record, f)
    _to_tensorboard(workdir, method, png)
    print(f"{method}: {len(ids)} examples in {seconds:.2f}s -> {out}/{method}.png, "
          f"{out}/{method}.json")


def sequence_examples(task, kind: str, tokenizer, seq_len: int):
    """(token rows, labels or None, indices) to explain: --text, or --examples of the run's
    validation passages (classifier, masked-LM) or --length windows of its text (LM)."""
    if _TEXT.value:
        if kind == "lm":
            ids = np.asarray(tokenizer.encode(_TEXT.value))[:seq_len]
            if not len(ids):
                fail("--text is empty after tokenization: give a prompt.")
            return ids[None].astype(np.int32), None, ["text"]
        return seqlib.frame_texts(tokenizer, [_TEXT.value], seq_len), None, ["text"]
    if _SPLIT.value not in ("", "val"):
        fail(f"--split={_SPLIT.value!r}: text runs explain their validation split (val).")
    if kind in ("text", "mlm"):
        ids = parse_examples(_EXAMPLES.value, task.num_examples("val"))
        chosen = task.examples("val", np.arange(ids.start, ids.stop))
        labels = chosen.get("labels")
        return (np.asarray(chosen["inputs"]), None if labels is None else np.asarray(labels),
                list(ids))
    if not 1 < _LENGTH.value <= seq_len:
        fail(f"--length={_LENGTH.value}: give 2 to {seq_len} (the model's context).")
    # A language model's examples are windows by their start: every --length-th position.
    ids = parse_examples(_EXAMPLES.value, task.num_examples("val") // _LENGTH.value + 1)
    rows = task.examples("val", np.arange(ids.start, ids.stop) * _LENGTH.value)["inputs"]
    return np.asarray(rows[:, :_LENGTH.value], np.int32), None, list(ids)


def explain_sequences(cfg, task, state, kind: str, method: str, workdir: str, out: str) -> None:
    """Text classifiers' ig / lime, and LM / BERT attention: HTML, PNG and JSON in `out`."""
    module, params = task.plain_model(state.params)  # a LoRA run's adapters folded in
    tokenizer, seq_len = task.tokenizer, task.seq_len
    pad_id = None if kind == "lm" else tokenizer.pad_id
    if _BASELINE.present:
        fail("--baseline is for image runs; text integrated gradients start from the [PAD] "
             "embeddings.")
    rows, labels, ids = sequence_examples(task, kind, tokenizer, seq_len)
    names = list(task.class_names)
    record = {"method": method, "run": kind, "options": {"text": _TEXT.value}}
    predicted = targets = None
    if kind == "text":
        logits = np.asarray(module.apply({"params": params}, jnp.asarray(rows),
                                         deterministic=True), np.float32)
        predicted = logits.argmax(-1)
        if _TARGET.value == "true" and labels is None:
            fail("--target=true needs labelled examples: --text has no label; use "
                 "--target=predicted or --examples.")
        targets = predicted if _TARGET.value == "predicted" else labels
    os.makedirs(out, exist_ok=True)
    start = time.time()
    if method == "attention":
        if kind == "text" or kind == "mlm":
            if not isinstance(module, (bert.Classifier, bert.MaskedLM)):
                fail(f"--method=attention: {type(module).__name__} sows no attention maps.")
        found = seqlib.attention(module, params, rows, tokenizer, pad_id)
        seconds = time.time() - start
        titles = [f"{i}" + (f": {names[p]}" if predicted is not None else "")
                  for i, p in zip(ids, predicted if predicted is not None else ids)]
        pngs = []
        for i, a, t in zip(ids, found, titles):
            png = render.attention_grid(a.maps, a.tokens, f"attention, example {t}")
            with open(os.path.join(out, f"attention_{i}.png"), "wb") as f:
                f.write(png)
            pngs.append(png)
        roll = render.rollout_grid([a.rollout for a in found], [a.tokens for a in found],
                                   titles, "attention rollout (Abnar & Zuidema 2020), rows: "
                                   "queries")
        with open(os.path.join(out, "attention_rollout.png"), "wb") as f:
            f.write(roll)
        record["examples"] = [{"index": i, "tokens": a.tokens,
                               "maps": np.round(a.maps, 5).tolist(),
                               "rollout": np.round(a.rollout, 5).tolist()}
                              for i, a in zip(ids, found)]
        _to_tensorboard(workdir, "attention_rollout", roll)
        _to_tensorboard(workdir, "attention", pngs[0])
        written = f"{out}/attention_<index>.png, {out}/attention_rollout.png"
    else:
        passages, entries = [], []
        lengths = seqlib.lengths(rows, pad_id)
        if method == "ig":
            scores = seqlib.token_ig(module, params, rows, targets, pad_id, _STEPS.value)
            for row, n, sc in zip(rows, lengths, scores):
                passages.append((seqlib.token_strings(tokenizer, row[:n]), sc[:n]))
        else:
            prob = seqlib.class_probabilities(module, params, tokenizer, seq_len)
            unk = seqlib.token_strings(tokenizer, [tokenizer.unk_id])[0]
            for row, n, t in zip(rows, lengths, targets):
                real = [x for x in row[:n] if int(x) not in tokenizer.special_ids]
                words, res = seqlib.lime_words(tokenizer.decode(real), int(t), prob,
                                               _SAMPLES.value or 1000, _SEED.value, unk)
                passages.append((words, res.weights))
                entries.append({"r2": round(res.score, 4), "intercept": res.intercept})
        seconds = time.time() - start
        heads = []
        for k, (i, p, t) in enumerate(zip(ids, predicted, targets)):
            true = "" if labels is None or labels[k] == p else f" (true {names[labels[k]]})"
            heads.append(f"{i}: predicted {names[p]}{true}; {method} for {names[t]}")
        page = "".join(render.text_html(toks, sc, h) for (toks, sc), h in zip(passages, heads))
        with open(os.path.join(out, f"{method}.html"), "w") as f:
            f.write(f"<html><meta charset='utf-8'><body>\n{page}</body></html>\n")
        png = render.text_png([(toks, sc, h) for (toks, sc), h in zip(passages, heads)])
        with open(os.path.join(out, f"{method}.png"), "wb") as f:
            f.write(png)
        record["options"].update(steps=_STEPS.value, samples=_SAMPLES.value, seed=_SEED.value,
                                 target=_TARGET.value)
        record["examples"] = [{"index": i, "predicted": names[p], "target": names[t],
                               **({"label": names[labels[k]]} if labels is not None else {}),
                               "tokens": toks, "attribution": np.round(sc, 6).tolist(),
                               **(entries[k] if entries else {})}
                              for k, (i, p, t, (toks, sc)) in enumerate(
                                  zip(ids, predicted, targets, passages))]
        _to_tensorboard(workdir, method, png)
        written = f"{out}/{method}.html, {out}/{method}.png"
    record["seconds"] = round(seconds, 3)
    with open(os.path.join(out, f"{method}.json"), "w") as f:
        json.dump(record, f)
    print(f"{method}: {len(ids)} examples in {seconds:.2f}s -> {written}, {out}/{method}.json")


def _to_tensorboard(workdir: str, method: str, png: bytes) -> None:
    try:
        from tensorboardX import SummaryWriter  # lazy: optional extra (tensorboard logging)
    except ImportError:
        return
    with SummaryWriter(os.path.join(workdir, "tensorboard")) as writer:
        writer.add_image(f"explain/{method}", render.png_array(png), dataformats="HWC")
