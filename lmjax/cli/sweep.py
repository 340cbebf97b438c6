"""Hyperparameter search on Optuna: run trials of a sweep until its budget is used, then write
the report (trials sorted by the objective, the best config as a command, plots).

    lmjax sweep --config=configs/gpt.py --sweep=configs/sweeps/gpt_lr.py
    lmjax sweep --config=configs/gpt.py --sweep=configs/sweeps/gpt_default.py \\
        --workdir=runs/sweeps/gpt --config.train.num_steps=400

Run the same command again to resume, or in several processes at once to share the work
(--storage names a shared database for workers on several hosts). Precedence of settings: the
config file, then the sweep's overrides and num_steps, then --config.* on this command line.
See docs/sweeps.md.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import fail
from lmjax.parallel.mesh import split_host_cpu

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The experiment config the sweep varies, e.g. configs/gpt.py",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory (default: "
                               "runs/sweeps/<sweep file name>).")

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file with get_sweep(), e.g. "
                             "configs/sweeps/gpt_lr.py")
_STORAGE = flags.DEFINE_string(
    "storage", "", "Study database URL (default: sqlite in --workdir). Workers on several hosts "
    "share one server, e.g. postgresql://user:password@host/optuna.")
_STUDY_NAME = flags.DEFINE_string("study_name", "", "Name of the study in the database "
                                  "(default: the name of --workdir).")


def main(args: list[str]) -> None:
    config = _CONFIG.value
    if config is None or not _SWEEP.value:
        fail("--config and --sweep are required, e.g. --config=configs/gpt.py "
             "--sweep=configs/sweeps/gpt_lr.py")
    config_arg = flags.FLAGS["config"].config_filename
    workdir = _WORKDIR.value or os.path.join(
        "runs", "sweeps", os.path.splitext(os.path.basename(_SWEEP.value))[0])

    split_host_cpu(config)  # before JAX starts: one CPU device per core
    # Optuna is an optional extra (.[sweep]): imported when a sweep runs.
    from lmjax import sweep as sweeplib  # noqa: lazy, optional extra
    from lmjax.sweep.spec import check_against_config, with_values  # noqa: lazy, optional extra
    from lmjax.train.loop import Preempted  # noqa: lazy, after split_host_cpu

    try:
        sweep = sweeplib.load_sweep(_SWEEP.value)
        cli = config_flags.get_override_values(flags.FLAGS["config"])
        check_against_config(sweep, config, cli)
        steps = {"train.num_steps": sweep.num_steps} if sweep.num_steps else {}
        fixed = {**steps, **sweep.overrides, **cli}
        base = with_values(config, fixed, "overrides")
        study = sweeplib.open_study(sweep, base, workdir, _STORAGE.value, _STUDY_NAME.value)
        ran = sweeplib.run_worker(study, sweep, base, workdir, echo=print)
        print(f"[sweep] this worker ran {ran} trial(s); the budget of {sweep.budget()} is used.")
        print(sweeplib.write_report(study, sweep, workdir, config_arg, fixed))
        print(f"Report, best command and plots in {workdir}")
    except Preempted:
        sys.exit(143)
    except KeyboardInterrupt:
        print("\n[sweep] interrupted: run the same command to resume.", file=sys.stderr)
        sys.exit(130)
