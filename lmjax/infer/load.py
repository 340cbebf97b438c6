"""A model ready for inference from a run directory: a training run, or an int8 export.

    loaded = load("runs/gpt")            # the run's latest checkpoint (or best=True)
    loaded = load("runs/gpt-int8")       # written by `lmjax quantize`
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
from lmjax.tasks import task_class
from lmjax.tasks.base import CAPABILITY_NAMES, DECODES
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
    capabilities: frozenset = frozenset({DECODES})  # the task's (an int8 export: a GPT's)


def load(path: str, best: bool = False, log=lambda s: None, needs=(DECODES,)) -> Loaded:
    """Loads a run's model for inference: a language model to generate with, or a run with
    another of the capabilities `needs` (lmjax/tasks/base.py, e.g. TEXT_CLASSES); errors name
    the directory and what it should contain."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path!r} is not a directory: give a run's --workdir (with "
                              "checkpoints/) or a directory written by lmjax quantize.")
    if int8.is_old_export(path):
        raise CheckpointError(f"{path} is an int8 export written by an earlier lmjax: export it "
                              "again from its run with lmjax quantize.")
    assets = rundir.read(path) if rundir.exists(path) else None
    if assets is not None and assets.weights == "int8":
        model, params = int8.load_export(path, assets)
        cfg = ml_collections.ConfigDict(assets.config)
        return Loaded(model=model, params=params, tokenizer=assets.tokenizer, cfg=cfg,
                      assets=assets, capabilities=task_class(cfg).capabilities,
                      source=f"{path} (int8 weights of {assets.source})")
    s, state = load_setup(path, best=best, log=log)
    if not set(needs) & s.task.capabilities:
        raise ValueError(f"{path} holds a {s.cfg.task!r} run; this needs a run that "
                         f"{' or '.join(CAPABILITY_NAMES[n] for n in needs)}.")
    # The plain model (a LoRA run's adapters folded into its kernels): it serves at full speed,
    # and exports (int8) and conversions see ordinary weights.
    model, params = s.task.plain_model(state.params)
    return Loaded(model=model, params=params, tokenizer=s.task.tokenizer,
                  cfg=s.cfg, assets=s.task.run_assets(), task=s.task,
                  capabilities=s.task.capabilities,
                  source=f"{path} (step {int(state.step)}{', best' if best else ''})")
