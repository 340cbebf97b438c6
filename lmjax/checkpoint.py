"""Orbax checkpoints of the training state, with the config that produced them stored beside it,
and a digest of what was saved, checked on every restore (docs/faults.md)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

try:  # a dependency (pyproject.toml); without it CRC-32, ~3.5x slower (docs/performance.md)
    import xxhash
except ImportError:
    xxhash = None

# Both find accidental damage (flipped bytes, torn writes), not tampering. blake2b and sha256
# ran at 0.39 and 0.26 GB/s per core on the 2-core CPU, CRC-32 at 2.1 and xxh3 at 7.2.
HASHES = {"crc32": lambda b: f"{zlib.crc32(b):08x}"}
if xxhash is not None:
    HASHES["xxh3_64"] = xxhash.xxh3_64_hexdigest
ALGORITHM = "xxh3_64" if xxhash is not None else "crc32"  # what new checkpoints record

# The digest goes into the step's custom metadata, which Orbax writes into the step's temporary
# folder before renaming it into place: a committed checkpoint always carries its own digest.
DIGEST_KEY = "lmjax_digest"
STEP_METADATA = "_CHECKPOINT_METADATA"
_DIFFERS = "differs from the digest recorded when it was saved"
_noted_unverified: set[str] = set()


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used. We never silently start over on top of it."""


def array_digests(tree, algorithm: str) -> dict[str, str] | None:
    """{leaf path: 'dtype:hash'} of each array's bytes as the host sees them, whatever the
    mesh; None when this process does not hold every array whole (several processes)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not all(getattr(x, "is_fully_addressable", True) for _, x in leaves):
        return None
    hash_bytes = HASHES[algorithm]

    def digest(x) -> str:
        a = np.ascontiguousarray(np.asarray(x))
        return f"{a.dtype}:{hash_bytes(a.reshape(-1).view(np.uint8))}"

    # Both hashes release the GIL on large buffers: the leaves are hashed on every core.
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        values = list(pool.map(digest, [x for _, x in leaves]))
    return {jax.tree_util.keystr(path).lstrip("."): v for (path, _), v in zip(leaves, values)}


def json_digest(obj, algorithm: str) -> str:
    """Of the JSON Orbax stores, in a form its round trip keeps (key order, tuples)."""
    text = json.dumps(json.loads(json.dumps(obj)), sort_keys=True)
    return HASHES[algorithm](text.encode())


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "config", "progress"))
        self._in_flight = None  # the step of an asynchronous save not yet waited for

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.wait()  # an asynchronous save in flight finishes before the run ends
        except CheckpointError:
            if exc_type is None:  # else the error already on its way out is the one to show
                raise
        finally:
            self.close()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state, config: dict, progress: dict | None = None,
             force: bool = False) -> bool:
        """`progress` is the loop's own bookkeeping (best metric so far, ...), restored with it."""
        if step in self.manager.all_steps():
            return False  # saved already (on schedule, then SIGTERM or the end at that step)
        if not force and not self.manager.should_save(step):
            return False  # Orbax would skip this step: spare the digest
        self.wait()  # a failed earlier save is reported as that step's failure
        progress = progress or {}
        digest = {"algorithm": ALGORITHM, "state": array_digests(state, ALGORITHM),
                  "config": json_digest(config, ALGORITHM),
                  "progress": json_digest(progress, ALGORITHM)}
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
                progress=ocp.args.JsonSave(progress)), force=force,
                custom_metadata={DIGEST_KEY: digest})
        except OSError as e:
            raise self._save_error(step, e) from e
        self._in_flight = step if saved else None
        return saved

    def progress(self, step: int) -> dict:
        return self._read_json(step, "progress") or {}

    def stored_config(self, step: int) -> dict:
        return self._read_json(step, "config")

    def _read_json(self, step: int, item: str):
        digest = self._recorded_digest(step)
        try:
            value = self.manager.restore(step, args=ocp.args.Composite(
                **{item: ocp.args.JsonRestore()}))[item]
        except Exception as e:
            raise self._error(step, e) from None
        if digest and digest[item] != json_digest(value, digest["algorithm"]):
            raise self._damaged(step, f"its {item} record ({item}/metadata) {_DIFFERS}")
        return value

    def restore(self, step: int, abstract_state, shardings):
        """Restores onto the given shardings: any mesh, whatever mesh wrote the checkpoint; then
        checks every array against the digest recorded when it was saved."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
            shardings)
        digest = self._recorded_digest(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
        except Exception as e:
            raise self._error(step, e) from None
        state = restored["state"]
        saved = digest and digest["state"]
        now = saved and array_digests(state, digest["algorithm"])
        if not now:
            if digest:
                self._note(step, "its arrays were saved or restored by several processes, which "
                           "lmjax does not hash")
            return state
        # A leaf restored in another dtype than it was saved in cannot be compared bytewise.
        bad = [k for k, v in saved.items() if k in now and v != now[k]
               and v.split(":")[0] == now[k].split(":")[0]]
        if bad:
            more = f" (and {len(bad) - 1} other arrays)" if len(bad) > 1 else ""
            raise self._damaged(step, f"the state array {bad[0]}{more} {_DIFFERS}")
        return state

    def set_aside_after(self, step: int) -> list[str]:
        """Renames the checkpoints after `step` to '<step>.set-aside' (Orbax ignores such names),
        so that a run resumed from `step` saves its own steps again. Nothing is deleted."""
        moved = []
        if jax.process_index() == 0:
            for s in self.all_steps():
                if s > step:
                    dst = self.step_dir(s) + ".set-aside"
                    n = 1
                    while os.path.exists(dst):
                        n += 1
                        dst = f"{self.step_dir(s)}.set-aside-{n}"
                    os.rename(self.step_dir(s), dst)
                    moved.append(dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("lmjax:set_aside_after")
        self.manager.reload()
        return moved

    def _recorded_digest(self, step: int) -> dict | None:
        """The digest saved with `step`, or None (with a note) when it cannot be checked. Every
        checkpoint Orbax commits has this metadata file: without it the step is damaged."""
        if not os.path.isdir(self.step_dir(step)):
            return None  # Orbax's own error names what is missing
        path = os.path.join(self.step_dir(step), STEP_METADATA)
        try:
            with open(path) as f:
                meta = json.load(f)
        except FileNotFoundError:
            raise self._damaged(step, f"its metadata file {STEP_METADATA}, which holds the "
                                "digest, is missing") from None
        except (OSError, ValueError) as e:
            raise self._damaged(step, f"its metadata file {STEP_METADATA}, which holds the "
                                f"digest, is unreadable ({type(e).__name__})") from None
        digest = (meta.get("custom_metadata") or {}).get(DIGEST_KEY)
        if digest is None:
            self._note(step, "it was written before lmjax recorded content digests")
        elif digest.get("algorithm") not in HASHES:
            self._note(step, f"its digest is {digest.get('algorithm')!r}, which needs "
                       "`pip install xxhash`")
            return None
        return digest

    def _note(self, step: int, why: str) -> None:
        """Once per checkpoint folder and process: a restore that could not be verified."""
        if jax.process_index() == 0 and self.directory not in _noted_unverified:
            _noted_unverified.add(self.directory)
            print(f"lmjax: note: the checkpoint at {self.step_dir(step)} is restored without "
                  f"verifying its content: {why}.", file=sys.stderr)

    def _fix(self, step: int) -> str:
        path = self.step_dir(step)
        aside = f"move it aside (mv {path} {path}.damaged) and run the same command"
        earlier = [s for s in self.all_steps() if s < step]
        if earlier:
            return (f"To resume training from the previous checkpoint add "
                    f"--config.checkpoint.restore_step={earlier[-1]}, or {aside}.")
        return f"There is no earlier checkpoint: {aside} to start over, or use another --workdir."

    def _damaged(self, step: int, problem: str) -> CheckpointError:
        return CheckpointError(
            f"The checkpoint at {self.step_dir(step)} (step {step}) is damaged: {problem}. "
            f"It has been left untouched. {self._fix(step)}")

    def _error(self, step: int, e: Exception) -> CheckpointError:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        return CheckpointError(
            f"The checkpoint at {self.step_dir(step)} could not be restored "
            f"({type(e).__name__}: {first}). It has been left untouched. {self._fix(step)}")

    def _save_error(self, step: int, e: OSError) -> CheckpointError:
        # Orbax commits a step by renaming its finished temporary folder: earlier steps are whole.
        done = [s for s in self.manager.all_steps(read=True) if s != step]
        latest = f" (latest: step {max(done)})" if done else ""
        step = "?" if step is None else step
        return CheckpointError(
            f"Saving the checkpoint of step {step} in {self.directory} failed ({e}). The earlier "
            f"checkpoints are untouched{latest}; free some space or make the folder writable, "
            "then run the same command to resume.")

    def wait(self) -> None:
        step, self._in_flight = self._in_flight, None
        try:
            self.manager.wait_until_finished()
        except OSError as e:
            raise self._save_error(step, e) from e

    def close(self) -> None:
        self.manager.close()
