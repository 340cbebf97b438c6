"""Where training progress goes: console lines, a JSON-lines metrics file, TensorBoard, and
Weights & Biases when the config asks for it; plus run_info.json, which records what produced
the run (config, lmjax version and git commit, library versions, devices)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid

import jax
import ml_collections
import numpy as np

from lmjax.config import ConfigError

# Versions recorded in run_info.json (those installed; the rest are left out).
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "ml-collections",
             "numpy", "tensorflow-datasets", "tokenizers", "tensorboardX", "optuna", "wandb",
             "transformers", "qwix")
WANDB_MODES = ("online", "offline", "disabled")


# The metrics a console line shows first, when present.
HEADLINE = ("loss", "accuracy", "perplexity", "f1_macro", "roc_auc", "masked_accuracy", "rmse",
            "mae", "r2", "epsilon")


def is_scalar(v) -> bool:
    """A metric logged as a curve (not a per-class table or a confusion matrix)."""
    return np.ndim(v) == 0 and not isinstance(v, (dict, str))


def scalar_metrics(metrics: dict) -> tuple[dict, str]:
    """(the scalar metrics as floats, a console line of the headline ones among them): what
    the training loop and the federated rounds log after each evaluation."""
    scalars = {k: float(v) for k, v in metrics.items() if is_scalar(v)}
    shown = [k for k in HEADLINE if k in scalars] or list(scalars)[:5]
    return scalars, " | ".join(f"{k} {scalars[k]:.4f}" for k in shown)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class MetricsWriteError(ValueError):
    """The run's metrics could not be written (a full disk): a user's to fix, in one line."""


class MetricLogger:
    """Only the main process writes; every process may call it."""

    def __init__(self, workdir: str, tensorboard: bool = True, echo=print,
                 wandb: dict | None = None, start_step: int | None = None):
        """`wandb`: keyword arguments for `wandb.init` (project, mode, config, ...), or None.
        `start_step`: the step training (re)starts from; what an earlier session logged after
        it is written again by this one, so it leaves metrics.jsonl and TensorBoard's view."""
        self.active = jax.process_index() == 0
        self.echo = echo
        self.file = None
        self.writer = None
        self.wandb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            if wandb is not None:  # first: if wandb is missing, nothing else is left open
                self.wandb = _start_wandb(workdir, wandb)
            path = os.path.join(workdir, "metrics.jsonl")
            if start_step is not None:
                moved = supersede(path, start_step)
                if moved:
                    echo(f"metrics.jsonl: {moved} records from after step {start_step}, which "
                         "this run logs again, moved to metrics.superseded.jsonl.")
            self.file = open(path, "a")
            if tensorboard:
                from tensorboardX import SummaryWriter
                # TensorBoard hides an earlier session's events from purge_step on.
                self.writer = SummaryWriter(
                    os.path.join(workdir, "tensorboard"),
                    purge_step=None if start_step is None else start_step + 1)

    @classmethod
    def for_run(cls, cfg: ml_collections.ConfigDict, workdir: str, echo=print,
                start_step: int = 0) -> "MetricLogger":
        """The logger the config's `log` section asks for; also writes run_info.json."""
        log = cfg.log
        wandb = None
        if log.get("wandb", False):
            mode = log.get("wandb_mode", "online")
            if mode not in WANDB_MODES:
                raise ConfigError(f"log.wandb_mode={mode!r}: use one of {', '.join(WANDB_MODES)}.")
            wandb = dict(project=log.get("wandb_project", "lmjax"), mode=mode,
                         config=cfg.to_dict())
        if jax.process_index() == 0:
            write_run_info(cfg, workdir)
        return cls(workdir, log.tensorboard, echo=echo, wandb=wandb, start_step=start_step)

    def write(self, step: int, split: str, metrics: dict, console: str | None = None) -> None:
        if not self.active:
            return
        record = {"step": step, "split": split, "time": time.time(),
                  **{k: float(v) for k, v in metrics.items()}}
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: one line, like a failed checkpoint save
            raise MetricsWriteError(
                f"Writing {self.file.name} failed at step {step}: {e.strerror or e}. The "
                "checkpoints already saved are untouched; free some space on that disk or pass "
                "another --workdir, then run the same command to resume.") from None
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{split}/{k}", float(v), step)
            self.writer.flush()  # a killed run keeps what it logged (bar a queued event)
        if self.wandb is not None:
            self.wandb.log({f"{split}/{k}": float(v) for k, v in metrics.items()}, step=step)
        line = console or " | ".join(f"{k} {_fmt(float(v))}" for k, v in metrics.items())
        self.echo(f"[{split}] step {step} | {line}")

    def text(self, step: int, tag: str, text: str) -> None:
        if not self.active:
            return
        if self.writer is not None:
            self.writer.add_text(tag, text, step)
        if self.wandb is not None:
            import wandb
            self.wandb.log({tag: wandb.Html(f"<pre>{_escape(text)}</pre>")}, step=step)

    def image(self, step: int, tag: str, image) -> None:
        """An image, such as a rendered confusion matrix: (height, width, channels) uint8 with
        1, 3 or 4 channels, or (height, width) grey."""
        if not self.active:
            return
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.dtype != np.uint8:
            raise ValueError(f"logger.image({tag!r}): expected (H, W, C) uint8 with C in 1, 3, 4; "
                             f"got {image.shape} {image.dtype}.")
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb
            self.wandb.log({tag: wandb.Image(image[..., 0] if image.shape[-1] == 1 else image)},
                           step=step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def supersede(path: str, step: int) -> int:
    """Moves the records of `path` (metrics.jsonl) after `step`, and any line a kill cut short,
    to metrics.superseded.jsonl beside it, so that each step keeps one record: the one of the
    session that produced the checkpoint training resumes from. Returns how many moved."""
    if not os.path.exists(path):
        return 0
    keep, moved = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                current = json.loads(line)["step"] <= step
            except (ValueError, KeyError, TypeError):
                current = False
            (keep if current else moved).append(line.rstrip("\n") + "\n")
    if moved:  # appended first: a crash in between leaves a duplicate, never a loss
        with open(os.path.join(os.path.dirname(path), "metrics.superseded.jsonl"), "a") as f:
            f.writelines(moved)
        with open(path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(path + ".tmp", path)
    return len(moved)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _start_wandb(workdir: str, kwargs: dict):
    try:
        import wandb
    except ImportError:
        raise ConfigError("log.wandb=True needs the wandb package: pip install wandb (or "
                          "'lmjax[wandb]'), or leave log.wandb=False.") from None
    # One W&B run per workdir: a resumed training run continues the same W&B run.
    id_file = os.path.join(workdir, "wandb_run_id")
    if os.path.exists(id_file):
        with open(id_file) as f:
            run_id = f.read().strip()
    else:
        run_id = uuid.uuid4().hex[:12]
        with open(id_file, "w") as f:
            f.write(run_id)
    return wandb.init(dir=workdir, id=run_id, resume="allow",
                      name=os.path.basename(os.path.abspath(workdir)), **kwargs)


def _git_commit() -> dict | None:
    """The commit of the lmjax checkout this code runs from (None when installed from a wheel)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_run_info(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
    """Writes <workdir>/run_info.json: enough to trace a result to what produced it. A resumed
    run rewrites it and appends its start time to `sessions`."""
    path = os.path.join(workdir, "run_info.json")
    sessions = []
    if os.path.exists(path):
        try:
            with open(path) as f:
                sessions = json.load(f).get("sessions", [])
        except (OSError, ValueError):
            pass  # a damaged file is replaced; the run itself is unaffected
    devices = jax.devices()
    info = {
        "lmjax_version": _version("lmjax"),
        "git": _git_commit(),
        "command": getattr(sys, "orig_argv", sys.argv),  # lmjax train --config=...
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "libraries": {n: v for n in LIBRARIES if (v := _version(n))},
        "devices": {"platform": devices[0].platform, "kind": devices[0].device_kind,
                    "count": len(devices), "processes": jax.process_count()},
        "sessions": sessions + [{"start": time.time()}],
        "config": cfg.to_dict(),
    }
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(info, f, indent=1)
    return info


def confusion_image(matrix, cell: int = 16) -> np.ndarray:
    """A confusion matrix as a grey image: each true class's row normalised, one square a cell
    (white: all of the row's examples; black: none)."""
    m = np.asarray(matrix, np.float64)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    return np.kron((rows * 255).round().astype(np.uint8), np.ones((cell, cell), np.uint8))
