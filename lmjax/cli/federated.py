"""Federated averaging (FedAvg, FedSGD, DP-FedAvg) over simulated clients on this machine.

    python -m lmjax.federated --config=configs/fashion_mnist.py:fedavg --workdir=runs/fedavg
    python -m lmjax.federated --config=configs/fashion_mnist.py:fedavg \\
        --config.federated.split=shards --workdir=runs/fedavg-noniid
    python -m lmjax.federated --config=configs/fashion_mnist.py:fedavg \\
        --config.federated.local_epochs=1 --config.federated.local_batch=0   # FedSGD
    python -m lmjax.federated --config=configs/gpt.py:fedavg    # one client per Shakespeare play

The `federated` config section sets the clients (K), the share sampled per round (C), local
epochs (E) and batch (B), the split (iid, shards, dirichlet; groups: a language model's
documents) and DP-FedAvg's clipping and noise.
Running the same command again resumes from the last saved round. The run directory is an
ordinary run: python -m lmjax.evaluate --workdir=runs/fedavg reads it. How: docs/federated.md.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import default_workdir, fail
from lmjax.parallel.mesh import split_host_cpu

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file with a preset, e.g. configs/fashion_mnist.py:fedavg",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the rounds' checkpoints and metrics go "
                               "(default: runs/<config name>[-<preset>]).")


def main(args: list[str]) -> None:
    config = _CONFIG.value
    if config is None:
        fail("--config is required, e.g. --config=configs/fashion_mnist.py:fedavg")
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    split_host_cpu(config)  # before JAX starts its backends
    from lmjax.train.federated import train_federated  # noqa: lazy, start-up

    summary = train_federated(config, workdir)
    print(json.dumps({k: v for k, v in summary.items() if v is not None}, sort_keys=True))
