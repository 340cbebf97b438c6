"""Hyperparameter sweeps on Optuna: grid, random, TPE (Bayesian) and Gaussian-process search,
pruning, resumable studies shared by several workers. See docs/sweeps.md."""

from lmjax.sweep.results import write_report
from lmjax.sweep.spec import Sweep, SweepError, load_sweep
from lmjax.sweep.study import open_study, run_worker

__all__ = ["Sweep", "SweepError", "load_sweep", "open_study", "run_worker", "write_report"]
