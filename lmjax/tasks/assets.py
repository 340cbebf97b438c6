"""A run's assets from its directory, upgrading runs written before directories kept them."""

from __future__ import annotations

import os

from lmjax import rundir
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.config import from_stored
from lmjax.tasks import make_task


def read_assets(workdir: str, log=print) -> rundir.Assets:
    """The assets of the run in `workdir`.

    A run written before run directories kept them (no run.json) is upgraded on load: its task
    is rebuilt once from its stored config, which reads its data as training did, and the
    assets are written into the directory (kept in memory if it is read-only).
    """
    try:
        return rundir.read(workdir)
    except rundir.MissingAssets:
        pass
    directory, stored = rundir.checkpoint_dir(workdir), None
    if os.path.isdir(directory):
        with Checkpointer(directory) as ckpt:
            step = ckpt.latest_step()
            stored = None if step is None else ckpt.stored_config(step)
    if stored is None:
        raise CheckpointError(f"{workdir!r} is not a run directory: it has no {rundir.META} and "
                              "no checkpoints/. Give the --workdir of a run that has saved at "
                              "least once, or an export written by lmjax quantize.")
    cfg = from_stored(stored)
    log(f"{workdir} predates run directories with assets: rebuilding its tokenizer and model "
        "config from its data once, and writing them into it.")
    assets = make_task(cfg, log=log).run_assets()
    try:
        rundir.write(workdir, assets)
    except OSError:
        return assets
    return rundir.read(workdir)
