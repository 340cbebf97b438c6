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

import ml_collections

# task name -> "module:Class", imported on use so that a GPT run does not import BERT.
TASKS = {
    "lm": "lmjax.tasks.lm:LanguageModelTask",
    "classify": "lmjax.tasks.classification:ClassificationTask",
    "regress": "lmjax.tasks.classification:RegressionTask",
    "mlm": "lmjax.tasks.mlm:MaskedLMTask",
    "text_classify": "lmjax.tasks.text_classification:TextClassificationTask",
}


def make_task(cfg: ml_collections.ConfigDict, log=print):
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is not one of {', '.join(sorted(TASKS))}.")
    module, name = TASKS[cfg.task].split(":")
    return getattr(importlib.import_module(module), name)(cfg, log=log)
