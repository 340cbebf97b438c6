"""Orbax checkpoints of the training state, with the config that produced them stored beside it,
and a digest of what was saved, checked on every restore (docs/faults.md). A checkpoint that
cannot be written or read is reported once, as a CheckpointError (one line)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import gc
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import zlib
from typing import Callable

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
    """A checkpoint that exists but cannot be used, or cannot be written. We never silently start
    over on top of it."""


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


def _uncompressed() -> ocp.StandardCheckpointHandler:
    """The handler of StandardSave / StandardRestore, writing arrays without zstd. Compressed,
    Orbax holds the compressed bytes in memory until an OCDBT data file (2 GiB) is written:
    saving a 2.4 GB float32 state of random weights took 1.8 GB more memory, uncompressed
    0.04 GB (tensorstore writes from the arrays themselves; benchmarks/import_memory.py).
    Float weights compress by a few per cent. Reading is the same either way (each array's
    metadata names its codec)."""
    handler = ocp.StandardCheckpointHandler()
    # The PyTree handler it wraps (orbax 0.12), with its arguments but compression; a subclass
    # would not be the handler Orbax registers for StandardSave. Were the attribute renamed,
    # the compressed one would remain.
    handler._impl = ocp.PyTreeCheckpointHandler(save_concurrent_gb=96, restore_concurrent_gb=96,
                                                use_compression=False)
    return handler


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, compress: bool = True):
        """`compress=False` writes the state's arrays uncompressed (`_uncompressed`): for
        states that must be saved in about their own size of memory (imported checkpoints)."""
        _ECHOES.install()
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "config", "progress"),
            item_handlers=None if compress else {"state": _uncompressed()})
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
        _ECHOES.begin()  # a save under way ends when it is waited for
        saved = False
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
                progress=ocp.args.JsonSave(progress)), force=force,
                custom_metadata={DIGEST_KEY: digest})
        except Exception as e:
            raise self._save_error(step, e)
        finally:
            if not saved:
                _ECHOES.end()
        self._in_flight = step if saved else None
        return saved

    def progress(self, step: int) -> dict:
        return self._read_json(step, "progress") or {}

    def stored_config(self, step: int) -> dict:
        return self._read_json(step, "config")

    def _read_json(self, step: int, item: str):
        digest = self._recorded_digest(step)
        with self._reading(step):
            value = self.manager.restore(step, args=ocp.args.Composite(
                **{item: ocp.args.JsonRestore()}))[item]
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
        with self._reading(step):
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
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

    @contextlib.contextmanager
    def _reading(self, step: int):
        """Around an Orbax restore: any failure becomes one CheckpointError naming the step."""
        _ECHOES.begin()
        try:
            yield
        except Exception as e:
            _ECHOES.fail()
            unreadable = _unreadable_array(e)
            if unreadable:
                raise self._damaged(step, unreadable) from e
            raise CheckpointError(
                f"The checkpoint at {self.step_dir(step)} could not be restored "
                f"({_first_line(e)}). It has been left untouched. {self._fix(step)}") from e
        finally:
            _ECHOES.end()

    def _save_error(self, step: int | None, e: Exception) -> Exception:
        """One line for a save that failed writing: the step, the last good one and the fix.
        (A failure that is not about storage, i.e. a bug, goes on as it is, with its echoes.)"""
        if not _is_storage_error(e):
            return e
        _ECHOES.fail()
        # Orbax commits a step by renaming its finished temporary folder: earlier steps are whole.
        self.manager.reload()
        done = [s for s in self.manager.all_steps() if s != step]
        code = _os_error(e)
        if code in (errno.ENOSPC, errno.EDQUOT):
            problem, fix = os.strerror(code), "free some space on that disk"
        elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
            problem, fix = os.strerror(code), "make the folder writable"
        else:
            problem, fix = _first_line(e), "remedy that"
        fix += " or pass another --workdir"
        what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
        if done:
            kept = (f"The earlier checkpoints are untouched (latest: step {max(done)}); {fix}, "
                    f"then run the same command to resume from step {max(done)}.")
        else:
            kept = f"There is no earlier checkpoint; {fix}, then run the same command."
        error = CheckpointError(f"Saving {what} in {self.directory} failed: {problem}. {kept}")
        error.__cause__ = e  # LMJAX_DEBUG=1 shows where it failed
        return error

    def wait(self) -> None:
        step, self._in_flight = self._in_flight, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._save_error(step, e)
        finally:
            if step is not None:
                _ECHOES.end()

    def close(self) -> None:
        self.manager.close()


# How a failed checkpoint operation is reported: once, in one line (docs/faults.md).

_ORBAX = os.path.dirname(os.path.dirname(ocp.__file__)) + os.sep
_LOOP_CLOSED = "Event loop is closed"


def _chain(e: BaseException | None):
    """`e` and the exceptions it was raised from or during."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _tensorstore_status(e: BaseException) -> bool:
    """TensorStore's errors start with their status code: 'RESOURCE_EXHAUSTED: ...'."""
    return bool(re.match(r"[A-Z]+(_[A-Z]+)*: ", str(e)))


def _from_orbax(e: BaseException | None) -> bool:
    """Raised in Orbax's machinery; or set by TensorStore on a future (no Python frames); or by
    a TensorStore callback into an event loop Orbax has already closed (asyncio's frames only)."""
    return any(str(x) == _LOOP_CLOSED or (x.__traceback__ is None and _tensorstore_status(x))
               or any(f.f_code.co_filename.startswith(_ORBAX)
                      for f, _ in traceback.walk_tb(x.__traceback__))
               for x in _chain(e))


class _Echoes(logging.Filter):
    """Orbax reports one failure many times over: each background thread of a save logs it with a
    traceback, asyncio logs the tasks left unawaited (some only at exit), and TensorStore's
    callbacks into the event loop Orbax closed raise 'Event loop is closed'. lmjax reports it
    once, as a CheckpointError. So while a checkpoint operation is under way (an asynchronous
    save until it is waited for), Orbax's warnings and errors and its exceptions are held back:
    shown when the operation succeeds, dropped when it fails; after a failure, this process drops
    its exceptions' further echoes. LMJAX_DEBUG=1 lets everything through as it happens."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.open = 0  # operations under way
        self.failed = False
        self.held: list[Callable[[], None]] = []

    def install(self) -> None:
        """Once per process, and again if something (pytest) replaced the unraisable hook."""
        for logger in (logging.getLogger("absl"), logging.getLogger("asyncio")):
            logger.addFilter(self)  # a no-op when it is there already
        previous = sys.unraisablehook
        if getattr(previous, "lmjax_echoes", None) is self:
            return

        def hook(args) -> None:
            error, tb = args.exc_value, args.exc_traceback

            def emit() -> None:  # formatted only if shown: most are dropped
                sys.stderr.write("".join(traceback.format_exception(type(error), error, tb)))

            if not (_from_orbax(error) and self._catch(emit)):
                previous(args)

        hook.lmjax_echoes = self
        sys.unraisablehook = hook

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "lmjax_released", False):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is None and not (record.levelno >= logging.WARNING and
                                  record.pathname.startswith(_ORBAX)):
            return True
        if error is not None and not _from_orbax(error):
            return True

        def emit() -> None:
            record.lmjax_released = True
            logging.getLogger(record.name).handle(record)

        return not self._catch(emit, exception=error is not None)

    def _catch(self, emit: Callable[[], None], exception: bool = True) -> bool:
        """False: let it through now. True: held back, or dropped after a failure."""
        if os.environ.get("LMJAX_DEBUG"):
            return False
        with self.lock:
            if self.failed and exception:
                return True
            if self.open:
                self.held.append(emit)
                return True
        return False

    def begin(self) -> None:
        with self.lock:
            self.open += 1

    def end(self) -> None:
        with self.lock:
            self.open -= 1
            release, self.held = (self.held, []) if not self.open else ([], self.held)
        for emit in release:
            emit()

    def fail(self) -> None:
        """A checkpoint operation failed and is being reported: what it left running ends now,
        so that nothing of it prints after lmjax's error line, and its echoes are dropped."""
        with self.lock:
            self.failed, self.held = True, []
        deadline = time.monotonic() + 60
        for t in threading.enumerate():  # the rest of the save's threads run on after one fails
            if type(t).__module__.startswith("orbax.") and t is not threading.current_thread():
                # Thread's own join: Orbax's raises the thread's exception again.
                threading.Thread.join(t, max(0.0, deadline - time.monotonic()))
        gc.collect()  # asyncio reports the tasks left unawaited when they are collected


_ECHOES = _Echoes()


def _os_error(e: BaseException) -> int | None:
    """The errno behind a failed write or read: an OSError's, or the one TensorStore names in
    its message ([os_error_code='28']); None if neither."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno:
            return x.errno
        code = re.search(r"os_error_code='?(\d+)", str(x))
        if code:
            return int(code.group(1))
    return None


def _is_storage_error(e: BaseException) -> bool:
    """An OSError or a TensorStore error, not a bug."""
    return any(isinstance(x, OSError) or _tensorstore_status(x) for x in _chain(e))


def _readable(text: str) -> str:
    """TensorStore's message without the payloads it appends ([tensorstore_spec='{...}'])."""
    return re.split(r" \[\w+(?:\[\d+\])?=", text.strip())[0]


def _first_line(e: BaseException) -> str:
    """The first line of the first error in the chain whose text is meant for a reader: Orbax
    wraps TensorStore's read errors in one that carries a pybind11 repr of the whole spec."""
    for x in _chain(e):
        text = _readable(str(x))
        if text and "<bound method" not in text:
            return f"{type(x).__name__}: {text.splitlines()[0][:300]}"
    return type(e).__name__


def _unreadable_array(e: BaseException) -> str:
    """'the state array <name> cannot be read (<why>)' when TensorStore failed to read (e.g.
    decompress) a chunk of one array's stored bytes; else ''."""
    for x in _chain(e):
        # The key is the array's name and the chunk's index: "params.wpe/0.0".
        found = re.search(r'Error reading "([^"/]+)/\d+(?:\.\d+)*" in OCDBT database at '
                          r'[^"]*"[^"]*": ([^;]*)', _readable(str(x)))
        if found:
            return f"the state array {found.group(1)} cannot be read ({found.group(2).strip()})"
    return ""
