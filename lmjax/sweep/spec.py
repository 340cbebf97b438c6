"""Sweep files: what to search, how, and for how long; checked up front with readable errors.

A sweep file is Python, like the configs, with `get_sweep()` returning a dict:

    def get_sweep():
        return dict(
            algorithm="tpe",                  # grid | random | tpe | gp
            metric="loss", direction="minimize",
            num_trials=16, num_steps=400,     # the budget; num_steps=0 keeps train.num_steps
            pruner="median",                  # none | median | successive_halving | hyperband
            overrides={"train.eval_every": 100},
            space={
                "optim.learning_rate": ("log_uniform", 1e-4, 1e-2),
                "optim.weight_decay": ("uniform", 0.0, 0.3),
                "optim.warmup_steps": ("int", 0, 200),        # optional 4th item: the step
                "model.dropout": ("categorical", [0.0, 0.1]),
            },
        )
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import runpy
import warnings
from typing import Any

import ml_collections
import optuna

from lmjax.config import ConfigError

ALGORITHMS = ("grid", "random", "tpe", "gp")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
KINDS = ("log_uniform", "uniform", "int", "categorical")


class SweepError(ConfigError):
    """The sweep file, or the study it is resumed into, cannot work; names the fix."""


@dataclasses.dataclass
class Sweep:
    space: dict
    algorithm: str = "tpe"
    metric: str = "loss"            # a validation metric of the task (val_<metric> in the summary)
    direction: str = "minimize"
    num_trials: int = 20            # trials in the whole study, over all workers
    num_steps: int = 0              # train.num_steps of every trial; 0 keeps the config's
    pruner: str = "median"
    pruner_startup_trials: int = 5  # median: trials that finish before any is pruned
    pruner_warmup_steps: int = 0    # median: steps a trial runs before it can be pruned
    startup_trials: int = 10        # tpe, gp: random trials before the model takes over
    seed: int = 0
    overrides: dict = dataclasses.field(default_factory=dict)

    def definition(self) -> dict:
        """What makes two sweeps the same study (the budget may grow between runs)."""
        d = dataclasses.asdict(self)
        d.pop("num_trials")
        d["space"] = {k: list(v) for k, v in d["space"].items()}
        return d

    def budget(self) -> int:
        if self.algorithm == "grid":  # a grid visits exactly its points, at most once each
            return min(self.num_trials or 10**9, len(grid_points(self)))
        return self.num_trials


def load_sweep(path: str) -> Sweep:
    if not os.path.isfile(path):
        raise SweepError(f"cannot load the sweep file {path!r}: pass an existing file, e.g. "
                         "--sweep=configs/sweeps/gpt_lr.py")
    fn = runpy.run_path(path).get("get_sweep")
    if fn is None:
        raise SweepError(f"{path} has no get_sweep() function returning the sweep as a dict.")
    raw = fn()
    raw = raw.to_dict() if isinstance(raw, ml_collections.ConfigDict) else dict(raw)
    fields = [f.name for f in dataclasses.fields(Sweep)]
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise SweepError(f"{path}: unknown sweep field {key!r}"
                             + (f"; did you mean {close[0]!r}?" if close else
                                f"; the fields are {', '.join(fields)}."))
    if "space" not in raw or not raw["space"]:
        raise SweepError(f"{path}: the sweep needs a non-empty 'space' of config fields to search.")
    sweep = Sweep(**raw)
    _check(sweep, path)
    return sweep


def _one_of(value, allowed, what):
    if value not in allowed:
        raise SweepError(f"{what}={value!r}: use one of {', '.join(map(repr, allowed))}.")


def _check(s: Sweep, path: str) -> None:
    _one_of(s.algorithm, ALGORITHMS, "algorithm")
    _one_of(s.direction, ("minimize", "maximize"), "direction")
    _one_of(s.pruner, PRUNERS, "pruner")
    if s.num_trials < 0 or s.num_steps < 0 or (s.num_trials == 0 and s.algorithm != "grid"):
        raise SweepError(f"{path}: num_trials must be positive (0 only for a grid: all its "
                         "points) and num_steps >= 0 (0 keeps the config's train.num_steps).")
    for name, spec in s.space.items():
        spec = tuple(spec)
        kind = spec[0] if spec else None
        if kind not in KINDS:
            raise SweepError(f"space[{name!r}]={spec!r}: start with one of {', '.join(KINDS)}, "
                             "e.g. ('log_uniform', 1e-4, 1e-2) or ('categorical', [0.0, 0.1]).")
        if kind == "categorical":
            ok = len(spec) == 2 and isinstance(spec[1], (list, tuple)) and len(spec[1]) > 0
            hint = "('categorical', [value, ...])"
        else:
            ok = len(spec) in ((3, 4) if kind == "int" else (3,)) and spec[1] < spec[2]
            ok = ok and (kind != "log_uniform" or spec[1] > 0)
            hint = (f"('{kind}', low, high{', step' if kind == 'int' else ''}) with low < high"
                    + (" and low > 0" if kind == "log_uniform" else ""))
        if not ok:
            raise SweepError(f"space[{name!r}]={spec!r}: write it as {hint}.")
        if s.algorithm == "grid" and kind in ("uniform", "log_uniform"):
            raise SweepError(f"space[{name!r}]: a grid needs the values to visit; write "
                             f"('categorical', [...]) instead of a {kind} range.")


def _values(spec) -> list:
    if spec[0] == "categorical":
        return list(spec[1])
    return list(range(spec[1], spec[2] + 1, spec[3] if len(spec) > 3 else 1))


def grid_points(s: Sweep) -> list[dict]:
    points = [{}]
    for name, spec in s.space.items():
        points = [{**p, name: v} for p in points for v in _values(spec)]
    return points


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """The trial's values for every field of the space."""
    out = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "categorical":
            out[name] = trial.suggest_categorical(name, list(spec[1]))
        elif kind == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2], step=spec[3] if len(spec) > 3 else 1)
        else:
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=kind == "log_uniform")
    return out


def with_values(cfg: ml_collections.ConfigDict, values: dict, source: str) -> ml_collections.ConfigDict:
    """A copy of `cfg` with dotted fields set; a missing field or wrong type names both."""
    cfg = copy.deepcopy(cfg)
    fields = _flat_names(cfg)
    for name, value in values.items():
        if name not in fields:  # checked here: an unlocked config would just add the field
            close = difflib.get_close_matches(name, fields, n=1)
            raise SweepError(f"{source}: the config has no field {name!r}"
                             + (f"; did you mean {close[0]!r}?" if close else "."))
        try:
            cfg.update_from_flattened_dict({name: value})
        except TypeError:
            raise SweepError(f"{source}: {name}={value!r} does not fit the config field's type "
                             f"({_field_type(cfg, name)}).") from None
    return cfg


def _flat_names(cfg, prefix="") -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, ml_collections.ConfigDict):
            out += _flat_names(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def _field_type(cfg, name: str) -> str:
    node: Any = cfg
    for part in name.split("."):
        node = node[part]
    return type(node).__name__


def check_against_config(s: Sweep, cfg: ml_collections.ConfigDict, cli: dict) -> None:
    """Fails before any trial if a swept or overridden field does not exist or cannot hold a value."""
    for name in s.space:
        if name in s.overrides or name in cli:
            where = "the sweep's overrides" if name in s.overrides else f"--config.{name}"
            raise SweepError(f"{name} is both searched and fixed by {where}: keep one.")
    with_values(cfg, s.overrides, "overrides")
    for name, spec in s.space.items():
        edges = list(spec[1]) if spec[0] == "categorical" else [spec[1], spec[2]]
        for v in edges:
            with_values(cfg, {name: v}, f"space[{name!r}]")


class _Grid(optuna.samplers.GridSampler):
    def after_trial(self, study, trial, state, values) -> None:
        # GridSampler stops the study when the grid is used up, which study.tell() (outside
        # study.optimize) does not allow; the budget, which is the grid's size, stops it here.
        pass


def make_sampler(s: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    """The search algorithm; `seed` is this worker's own (see open_study)."""
    if s.algorithm == "grid":
        # GridSampler shuffles the grid by its seed and names points by their index: every
        # worker must shuffle alike, so the grid takes the sweep's seed, not the worker's.
        return _Grid({k: _values(v) for k, v in s.space.items()}, seed=s.seed)
    if s.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.algorithm == "tpe":
        # constant_liar: concurrent workers see each other's running trials and spread out.
        with warnings.catch_warnings():  # both options are "experimental" in older Optunas
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials,
                                              multivariate=True, constant_liar=True)
    try:
        import torch  # noqa: F401  (Optuna's Gaussian-process sampler is written in PyTorch)
    except ImportError:
        raise SweepError("algorithm='gp' needs PyTorch (Optuna's GPSampler): pip install torch, "
                         "or use algorithm='tpe'.") from None
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.startup_trials)


def make_pruner(s: Sweep) -> optuna.pruners.BasePruner:
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                           n_warmup_steps=s.pruner_warmup_steps)
    if s.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()
