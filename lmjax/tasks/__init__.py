"""What each model family brings to the one trainer, and the switches that change how it trains.

A task (see `base.Task` for the interface and its defaults) is a model, its loss, its data and
its metrics. A training switch (`wrapper.TaskWrapper`) changes how any task trains without
changing what it is: LoRA adapters, ensembles, distillation, adversarial training, DP-SGD,
pruning, federated averaging. Each switch is one module that owns its config section
(`SECTION`, `section()`), its checks (`check(cfg)`), the fields that define the saved state
(`STATE_DEFINING`), when it is on (`enabled(cfg)`) and its wrapper (`wrap(...)`).

This package's own module is light (no JAX): configs import it to add a switch's section,
`configs/gpt.py:cpu+prune` being the cpu preset with the prune section added (`with_switches`).
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable

import ml_collections

# task name -> "module:Class", imported on use so that a GPT run does not import BERT.
TASKS = {
    "lm": "lmjax.tasks.lm:LanguageModelTask",
    "classify": "lmjax.tasks.classification:ClassificationTask",
    "regress": "lmjax.tasks.classification:RegressionTask",
    "mlm": "lmjax.tasks.mlm:MaskedLMTask",
    "text_classify": "lmjax.tasks.text_classification:TextClassificationTask",
    "sft": "lmjax.tasks.sft:SFTTask",
    "dpo": "lmjax.tasks.dpo:DPOTask",
    "grpo": "lmjax.tasks.grpo:GRPOTask",
}
# The config file that trains each task, for messages.
CONFIGS = {"lm": "configs/gpt.py", "classify": "configs/fashion_mnist.py",
           "regress": "configs/tabular.py:diabetes", "mlm": "configs/bert.py",
           "text_classify": "configs/classify.py", "sft": "configs/sft.py",
           "dpo": "configs/dpo.py", "grpo": "configs/grpo.py"}

# Training switches, innermost first: config section -> the module that owns it. The order is
# the order of wrapping: DP-SGD clips the whole (distilled, adversarial, ensembled) loss;
# pruning masks what every other optimizer change produced; federated rounds run whatever the
# clients would train.
SWITCHES = {
    "lora": "lmjax.tasks.adapters",       # low-rank adapters on a frozen model
    "ensemble": "lmjax.tasks.ensemble",   # M members vmapped in one step
    "distill": "lmjax.tasks.distill",     # soft targets from a teacher run
    "robust": "lmjax.tasks.adversarial",  # FGSM/PGD adversarial training
    "privacy": "lmjax.tasks.private",     # DP-SGD (and DP-FedAvg's settings)
    "prune": "lmjax.tasks.pruned",        # gradual magnitude pruning
    "federated": "lmjax.tasks.federated",  # FedAvg rounds over simulated clients
    "eval": "lmjax.eval.harness",         # not a wrapper: lm-eval tasks every N steps (the loop)
}


def switch(name: str):
    """The module that owns the switch `name`."""
    if name not in SWITCHES:
        raise ValueError(f"{name!r} is not a training switch: use one of "
                         f"{', '.join(SWITCHES)}.")
    return importlib.import_module(SWITCHES[name])


def add_switches(cfg: ml_collections.ConfigDict, *names: str) -> ml_collections.ConfigDict:
    """`cfg` with the config sections of the switches `names` (their defaults leave them off
    until a field turns them on, e.g. prune.target_sparsity)."""
    with cfg.unlocked():
        for name in names:
            if name not in cfg:
                cfg[name] = switch(name).section()
    return cfg


def with_switches(get_config: Callable) -> Callable:
    """For a config file's `get_config(preset)`: 'tiny+prune+privacy' is the tiny preset with the
    prune and privacy sections added."""
    @functools.wraps(get_config)
    def wrapped(preset: str | None = None):
        base, *names = (preset or "").split("+")
        cfg = get_config(base) if base else get_config()
        return add_switches(cfg, *names)

    return wrapped


def switches_in(cfg: ml_collections.ConfigDict) -> list:
    """The modules of the switches whose sections `cfg` has, innermost first."""
    return [switch(name) for name in SWITCHES if name in cfg]


def task_class(cfg: ml_collections.ConfigDict):
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is not one of {', '.join(sorted(TASKS))}.")
    module, name = TASKS[cfg.task].split(":")
    return getattr(importlib.import_module(module), name)


def require_task(cfg: ml_collections.ConfigDict, name: str, why: str,
                 error: type = ValueError) -> None:
    """Refuses a config of another task than `name`: `why` then '--config is a <task> config'
    and the fix. (The commands ask tasks what they can do, never their names: this is where a
    name is compared.)"""
    if cfg.task != name:
        raise error(f"{why}, but --config is a {cfg.task!r} config: pass --config="
                    f"{CONFIGS.get(name, 'a config of that task')} or leave --config out.")


def check(cfg: ml_collections.ConfigDict) -> None:
    """The task's and every present switch's checks: before any data is read. A switch section
    stored by an earlier lmjax gets the fields added since, at their defaults."""
    task_class(cfg).check(cfg)
    for name, module in zip([n for n in SWITCHES if n in cfg], switches_in(cfg)):
        with cfg.unlocked():
            for key, value in module.section().items():
                if key not in cfg[name]:
                    cfg[name][key] = value
        module.check(cfg)


def make_task(cfg: ml_collections.ConfigDict, assets=None, log=print, mesh=None):
    """The task of `cfg`, wrapped by the switches it turns on: for training (reads its data), or
    from a run's `assets` (rundir.Assets: no data until a batch is asked for). `mesh` is the
    device mesh the run trains on (federated rounds split their clients over it)."""
    check(cfg)
    task = task_class(cfg)(cfg, assets=assets, log=log)
    for module in switches_in(cfg):
        if module.enabled(cfg):
            task = module.wrap(task, cfg, assets=assets, log=log, mesh=mesh)
    return task


def state_defining() -> dict:
    """Every switch's fields that change the saved state's shape or meaning (dotted path -> what
    a config without the field means: the switch off), for resuming checks."""
    out = {}
    for name in SWITCHES:
        out.update(switch(name).STATE_DEFINING)
    return out
