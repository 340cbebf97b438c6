"""Command line: `python -m lmjax.sweep --config=configs/gpt.py --sweep=configs/sweeps/gpt_lr.py
[--workdir=DIR] [--storage=URL] [--config.a.b=v]`.

Runs trials of the study until its budget is used, then writes the report (trials sorted by the
objective, the best config as a command, plots). Run the same command again to resume, or in
several processes at once to share the work. Precedence of settings: the config file, then the
sweep's overrides and num_steps, then --config.* on this command line.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lmjax import main as lmjax_main  # --config, --workdir and the readable flag errors

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file with get_sweep(), e.g. "
                             "configs/sweeps/gpt_lr.py")
_STORAGE = flags.DEFINE_string(
    "storage", "", "Study database URL (default: sqlite in --workdir). Workers on several hosts "
    "share one server, e.g. postgresql://user:password@host/optuna.")
_STUDY_NAME = flags.DEFINE_string("study_name", "", "Name of the study in the database "
                                  "(default: the name of --workdir).")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    fail = lmjax_main._fail
    config = flags.FLAGS["config"].value
    if config is None or not _SWEEP.value:
        fail("--config and --sweep are required, e.g. --config=configs/gpt.py "
             "--sweep=configs/sweeps/gpt_lr.py")
    config_arg = flags.FLAGS["config"].config_filename
    workdir = flags.FLAGS["workdir"].value or os.path.join(
        "runs", "sweeps", os.path.splitext(os.path.basename(_SWEEP.value))[0])

    from lmjax.parallel.mesh import split_host_cpu
    split_host_cpu(config)
    from lmjax import sweep as sweeplib  # heavy imports (JAX, Optuna) after the device set-up
    from lmjax.sweep.spec import check_against_config, with_values
    from lmjax.train.loop import Preempted

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
    except lmjax_main.USER_ERRORS as e:
        if os.environ.get("LMJAX_DEBUG"):
            raise
        fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=lmjax_main.parse_flags)
