"""A model ready for inference from a directory: a training run's workdir, or an int8 export.

    loaded = load("runs/gpt")            # the run's latest checkpoint (or best=True)
    loaded = load("runs/gpt-int8")       # written by `python -m lmjax.quantize`
    Generator(loaded.model, loaded.params, loaded.tokenizer)
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from lmjax.checkpoint import CheckpointError

QUANTIZED_META = "quantized.json"


@dataclasses.dataclass
class Loaded:
    model: object       # a flax module (a qwix-wrapped one for int8 exports)
    params: object
    tokenizer: object
    cfg: ml_collections.ConfigDict  # the config of the run that trained the weights
    task: object = None  # the run's task, when loaded from a training workdir
    source: str = ""     # a line for logs: what was loaded


def load(path: str, best: bool = False, log=lambda s: None, tasks=("lm",)) -> Loaded:
    """Loads a GPT for generation (or a run of another of `tasks`, e.g. 'text_classify');
    errors name the directory and what it should contain."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path!r} is not a directory: give a run's --workdir (with "
                              "checkpoints/) or a directory written by python -m lmjax.quantize.")
    if os.path.exists(os.path.join(path, QUANTIZED_META)):
        from lmjax.infer.quantize import load_quantized

        return load_quantized(path)
    from lmjax.train.restore import load_run

    cfg, task, state = load_run(path, best=best, log=log)
    if cfg.task not in tasks:
        raise ValueError(f"{path} holds a {cfg.task!r} run; this needs "
                         f"{' or '.join(repr(t) for t in tasks)} (a GPT language model is 'lm').")
    return Loaded(model=task.model, params=state.params, tokenizer=task.tokenizer,
                  cfg=cfg, task=task,
                  source=f"{path} (step {int(state.step)}{', best' if best else ''})")
