"""A model ready for inference from a run directory: a training run, or an int8 export.

    loaded = load("runs/gpt")            # the run's latest checkpoint (or best=True)
    loaded = load("runs/gpt-int8")       # written by `python -m lmjax.quantize`
    Generator(loaded.model, loaded.params, loaded.tokenizer)

Everything comes from the directory itself (lmjax/rundir.py): no corpus or data cache is read.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from lmjax import rundir
from lmjax.checkpoint import CheckpointError
from lmjax.infer import int8
from lmjax.models import lora
from lmjax.train.restore import load_setup


@dataclasses.dataclass
class Loaded:
    model: object       # a flax module (a qwix-wrapped one for int8 exports)
    params: object
    tokenizer: object
    cfg: ml_collections.ConfigDict  # the config of the run that trained the weights
    assets: rundir.Assets
    task: object = None  # the run's task, when loaded from a training run
    source: str = ""     # a line for logs: what was loaded


def load(path: str, best: bool = False, log=lambda s: None, tasks=("lm",)) -> Loaded:
    """Loads a GPT for generation (or a run of another of `tasks`, e.g. 'text_classify');
    errors name the directory and what it should contain."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path!r} is not a directory: give a run's --workdir (with "
                              "checkpoints/) or a directory written by python -m lmjax.quantize.")
    if int8.is_old_export(path):
        raise CheckpointError(f"{path} is an int8 export written by an earlier lmjax: export it "
                              "again from its run with python -m lmjax.quantize.")
    assets = rundir.read(path) if rundir.exists(path) else None
    if assets is not None and assets.weights == "int8":
        model, params = int8.load_export(path, assets)
        return Loaded(model=model, params=params, tokenizer=assets.tokenizer,
                      cfg=ml_collections.ConfigDict(assets.config), assets=assets,
                      source=f"{path} (int8 weights of {assets.source})")
    s, state = load_setup(path, best=best, log=log)
    if s.cfg.task not in tasks:
        raise ValueError(f"{path} holds a {s.cfg.task!r} run; this needs "
                         f"{' or '.join(repr(t) for t in tasks)} (a GPT language model is 'lm').")
    model, params = s.task.model, state.params
    if "lora" in s.cfg and s.cfg.lora.rank > 0:
        # Adapters folded into the kernels: the plain model serves at full speed, and exports
        # (int8) and conversions see ordinary weights.
        model, params = s.task.base_model, lora.merged(params, s.cfg.lora)
    return Loaded(model=model, params=params, tokenizer=s.task.tokenizer,
                  cfg=s.cfg, assets=s.task.run_assets(), task=s.task,
                  source=f"{path} (step {int(state.step)}{', best' if best else ''})")
