"""What each model family brings to the one trainer: a model, its loss, its data, its metrics.

The interface, which every task implements (see `base.Task` for the defaults):

    model                                   a flax.linen Module
    init_variables(rng) -> dict             {'params': ..., and e.g. 'batch_stats': ...}
    loss(params, model_state, batch, rng)   -> (loss, (aux metrics, new model_state))
    eval_outputs(params, model_state, batch) -> {'sums': {..., 'count'}, 'examples': {...}}
    summarize(sums, examples) -> metrics    over the whole evaluation set
    train_batch(step, process_index, process_count), eval_batches(batch_size, max_examples, split)

`model_state` holds the variable collections that are not trained by gradients (batch-norm
statistics); it is {} for most models.
"""

from __future__ import annotations

import importlib
import os

import ml_collections

from lmjax import rundir
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.config import from_stored

# task name -> "module:Class", imported on use so that a GPT run does not import BERT.
TASKS = {
    "lm": "lmjax.tasks.lm:LanguageModelTask",
    "classify": "lmjax.tasks.classification:ClassificationTask",
    "regress": "lmjax.tasks.classification:RegressionTask",
    "mlm": "lmjax.tasks.mlm:MaskedLMTask",
    "text_classify": "lmjax.tasks.text_classification:TextClassificationTask",
    "sft": "lmjax.tasks.sft:SFTTask",
}

# Training switches that wrap any task (lmjax/tasks/wrapper.py), innermost first:
# config section -> "module:function", function(task, cfg, assets, log) -> the task, wrapped
# when the section turns the switch on and returned unchanged otherwise.
WRAPPERS = {
    "ensemble": "lmjax.tasks.ensemble:wrap",      # M members vmapped in one step
    "distill": "lmjax.tasks.distill:wrap",        # soft targets from a teacher run
    "robust": "lmjax.tasks.adversarial:wrap",     # FGSM/PGD adversarial training
    "privacy": "lmjax.tasks.private:wrap",        # DP-SGD, outermost: it clips whole losses
}


def make_task(cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None, log=print):
    """The task of `cfg`: for training (reads its data), or from a run's `assets` (no data
    until a batch is asked for)."""
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is not one of {', '.join(sorted(TASKS))}.")
    module, name = TASKS[cfg.task].split(":")
    task = getattr(importlib.import_module(module), name)(cfg, assets=assets, log=log)
    for section, spec in WRAPPERS.items():
        if section in cfg:
            module, name = spec.split(":")
            task = getattr(importlib.import_module(module), name)(task, cfg, assets, log)
    return task


def read_assets(workdir: str, log=print) -> rundir.Assets:
    """The assets of the run in `workdir`.

    A run written before run directories kept them (no run.json) is upgraded on load: its task
    is rebuilt once from its stored config, which reads its data as training did, and the
    assets are written into the directory (kept in memory if it is read-only).
    """
    try:
        return rundir.read(workdir)
    except rundir.MissingAssets:
        pass
    directory, stored = rundir.checkpoint_dir(workdir), None
    if os.path.isdir(directory):
        with Checkpointer(directory) as ckpt:
            step = ckpt.latest_step()
            stored = None if step is None else ckpt.stored_config(step)
    if stored is None:
        raise CheckpointError(f"{workdir!r} is not a run directory: it has no {rundir.META} and "
                              "no checkpoints/. Give the --workdir of a run that has saved at "
                              "least once, or an export written by python -m lmjax.quantize.")
    cfg = from_stored(stored)
    log(f"{workdir} predates run directories with assets: rebuilding its tokenizer and model "
        "config from its data once, and writing them into it.")
    assets = make_task(cfg, log=log).run_assets()
    try:
        rundir.write(workdir, assets)
    except OSError:
        return assets
    return rundir.read(workdir)
