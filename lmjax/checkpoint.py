"""Orbax checkpoints of the training state, with the config that produced them stored beside it."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used. We never silently start over on top of it."""


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "config", "progress"))

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.wait()  # an asynchronous save in flight finishes before the run ends
        self.close()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, config: dict, progress: dict | None = None,
             force: bool = False) -> bool:
        """`progress` is the loop's own bookkeeping (best metric so far, ...), restored with it."""
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
            progress=ocp.args.JsonSave(progress or {})), force=force)

    def progress(self, step: int) -> dict:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(
                progress=ocp.args.JsonRestore()))["progress"] or {}
        except Exception as e:
            raise self._error(step, e) from None

    def stored_config(self, step: int) -> dict:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(
                config=ocp.args.JsonRestore()))["config"]
        except Exception as e:
            raise self._error(step, e) from None

    def restore(self, step: int, abstract_state, shardings):
        """Restores onto the given shardings: any mesh, whatever mesh wrote the checkpoint."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
            shardings)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
        except Exception as e:
            raise self._error(step, e) from None
        return restored["state"]

    def _error(self, step: int, e: Exception) -> CheckpointError:
        path = os.path.join(self.directory, str(step))
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        return CheckpointError(
            f"The checkpoint at {path} could not be restored ({type(e).__name__}: {first}). "
            "It has been left untouched. To resume from an earlier checkpoint, move this step's "
            "folder away; to start a fresh run, use another --workdir or "
            "--config.checkpoint.restore=False with a new workdir.")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
