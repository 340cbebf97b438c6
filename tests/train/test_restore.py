"""Evaluating a saved run from its directory alone (lmjax.train.restore.evaluate_run, the
library of `lmjax evaluate`), against the evaluation the trainer itself logged."""

import json
import os

import numpy as np
import pytest

from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import evaluate_run

EXAMPLES = 16  # validation windows of the trainer's final evaluation, and of evaluate_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, load_config):
    """Six steps of configs/gpt.py:tiny on a small text file: (workdir, the trainer's summary).
    (A small corpus and AdamW keep the set-up short: compiling dominates it.)"""
    tmp = tmp_path_factory.mktemp("restore")
    rng = np.random.default_rng(0)
    words = "to be or not that is the question whether tis nobler in the mind".split()
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(2000)))
    cfg = load_config("tiny")
    cfg.data.update(name="files", files=str(corpus), cache_dir=str(tmp / "cache"))
    cfg.log.tensorboard = False
    cfg.mesh.host_cpu_devices = 0  # JAX's devices: the 8 simulated ones of tests/conftest.py
    cfg.mesh.data = 1  # one of them: compiles faster than eight on 2 cores
    cfg.optim.name = "adamw"
    cfg.sample.num_samples = 0
    cfg.train.update(num_steps=6, log_every=3, eval_every=100, final_eval_examples=EXAMPLES)
    cfg.checkpoint.every = 100  # the final save only
    workdir = str(tmp / "gpt")
    summary = train_and_evaluate(cfg, workdir)
    return workdir, summary


def _logged_val(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["split"] == "val"]


@pytest.mark.slow
def test_evaluate_run_equals_the_trainers_final_evaluation(run):
    workdir, summary = run
    logged = _logged_val(workdir)
    assert [r["step"] for r in logged] == [6]  # the final evaluation only
    got = evaluate_run(workdir, max_examples=EXAMPLES)
    # The saved checkpoint on the same windows as the trainer's last evaluation.
    assert got["loss"] == pytest.approx(logged[0]["loss"], rel=1e-5)
    assert got["loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    for k, v in got.items():
        if isinstance(v, float) and f"val_{k}" in summary:
            assert v == pytest.approx(summary[f"val_{k}"], rel=1e-5), k
    # More windows give another loss: max_examples is honoured.
    assert evaluate_run(workdir, max_examples=2 * EXAMPLES)["loss"] != pytest.approx(
        got["loss"], rel=1e-5)


def test_an_unknown_split_names_the_splits(run):
    workdir, _ = run
    with pytest.raises(ValueError, match=r"split='test': this task evaluates on val\b"):
        evaluate_run(workdir, split="test", max_examples=EXAMPLES)
