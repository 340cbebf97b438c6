"""Train (or resume) a run, evaluate it, checkpoint it and sample from it.

    lmjax train --config=configs/gpt.py
    lmjax train --config=configs/gpt.py:gpt2_124m --workdir=runs/gpt2
    lmjax train --config=configs/gpt.py --config.model.num_layers=6

Every config field can be overridden as --config.<section>.<field>=value. Running the same
command again resumes from the workdir's latest checkpoint. With data.num_folds=k (and
data.fold=-1) it trains one run per fold and reports their mean and spread.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import default_workdir, fail
from lmjax.parallel.mesh import split_host_cpu

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with a preset: configs/gpt.py:gpt2_124m",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics and TensorBoard files go "
    "(default: runs/<config name>[-<preset>]).")


def main(args: list[str]) -> None:
    config = _CONFIG.value
    if config is None:
        fail("--config is required, e.g. --config=configs/gpt.py")
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    split_host_cpu(config)  # before JAX starts its backends: one CPU device per core
    # The trainer pulls in Flax, Optax, Orbax and the data libraries (seconds): imported once
    # the flags are known good, so that --help and flag mistakes answer at once.
    from lmjax.train.crossval import fit  # noqa: lazy, start-up
    from lmjax.train.loop import Diverged, Preempted  # noqa: lazy, start-up

    try:
        fit(config, workdir)
    except Preempted:
        sys.exit(143)  # the conventional status for "terminated by SIGTERM": schedulers retry
    except Diverged as e:
        fail(str(e))
