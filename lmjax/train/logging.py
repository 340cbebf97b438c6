"""Where training progress goes: console lines, a JSON-lines metrics file, TensorBoard."""

from __future__ import annotations

import json
import os
import time

import jax


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class MetricLogger:
    """Only the main process writes; every process may call it."""

    def __init__(self, workdir: str, tensorboard: bool = True, echo=print):
        self.active = jax.process_index() == 0
        self.echo = echo
        self.file = None
        self.writer = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            self.file = open(os.path.join(workdir, "metrics.jsonl"), "a")
            if tensorboard:
                from tensorboardX import SummaryWriter
                self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict, console: str | None = None) -> None:
        if not self.active:
            return
        record = {"step": step, "split": split, "time": time.time(),
                  **{k: float(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{split}/{k}", float(v), step)
        line = console or " | ".join(f"{k} {_fmt(float(v))}" for k, v in metrics.items())
        self.echo(f"[{split}] step {step} | {line}")

    def text(self, step: int, tag: str, text: str) -> None:
        if self.active and self.writer is not None:
            self.writer.add_text(tag, text, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
