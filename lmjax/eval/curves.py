"""Comparing runs (the library of `lmjax report <workdir> [<workdir> ...]`).

Reads each run's metrics.jsonl (and run_info.json for its wall time) and writes one PNG per
curve (training loss, every validation metric) with all runs overlaid, and report.md: the
runs side by side with steps, wall time, throughput, and the final and best value of every
validation metric. Lower is better for metrics named like a loss or an error, higher for the
rest (accuracy, F1, ...).
"""

from __future__ import annotations

import json
import os

import numpy as np

# Not curves to compare across runs: they are in TensorBoard.
_NOT_CURVES = ("lr", "grad_norm")
_LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "mse", "mae", "rmse")


class ReportError(ValueError):
    pass


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in _LOWER_IS_BETTER)


def load_run(workdir: str) -> dict:
    """{split: {metric: (steps, values)}} from metrics.jsonl, a resumed run's repeated steps
    counted once (the latest record wins), plus `times` (step -> time) and run_info."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ReportError(f"{workdir} has no metrics.jsonl: pass the --workdir of a training run.")
    records, times = {}, []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                records[(r["split"], r["step"])] = r
                times.append(r["time"])  # every record: superseded ones still took time
    curves: dict = {}
    for (split, step), r in sorted(records.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        for k, v in r.items():
            if k not in ("step", "split", "time"):
                curves.setdefault(split, {}).setdefault(k, ([], []))
                curves[split][k][0].append(step)
                curves[split][k][1].append(v)
    info = {}
    if os.path.isfile(os.path.join(workdir, "run_info.json")):
        with open(os.path.join(workdir, "run_info.json")) as f:
            info = json.load(f)
    return {"workdir": workdir, "curves": curves, "times": sorted(times), "info": info}


def wall_time(run: dict) -> float | None:
    """Seconds spent in the run's sessions: from each start to its last record (idle time
    between an interruption and the resume is left out)."""
    times = run["times"]
    if not times:
        return None
    starts = sorted(s["start"] for s in run["info"].get("sessions", []))
    if not starts:
        return times[-1] - times[0]
    total = 0.0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else float("inf")
        inside = [t for t in times if start <= t < end]
        total += (inside[-1] - start) if inside else 0.0
    return total


def summarize(run: dict) -> dict:
    curves, out = run["curves"], {}
    train = curves.get("train", {})
    out["steps"] = max((max(c[0]) for split in curves.values() for c in split.values()),
                       default=0)
    out["wall time"] = wall_time(run)
    for key, unit in (("tokens_per_s", "tokens/s"), ("examples_per_s", "examples/s")):
        if key in train:
            out[unit] = float(np.median(train[key][1]))
    if "loss" in train:
        out["final train loss"] = train["loss"][1][-1]
    for split, metrics in curves.items():
        if split == "train":
            continue
        for name, (steps_, values) in metrics.items():
            out[f"final {split} {name}"] = values[-1]
            if len(values) > 1:
                i = int(np.argmin(values) if lower_is_better(name) else np.argmax(values))
                out[f"best {split} {name}"] = (values[i], steps_[i])
    return out


def labels(workdirs: list[str]) -> list[str]:
    """Short names that tell the runs apart: the folder names, or more of the path if needed."""
    parts = [os.path.normpath(os.path.abspath(w)).split(os.sep) for w in workdirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return workdirs


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key == "wall time":
        s = int(value)
        return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
    if isinstance(value, tuple):
        return f"{value[0]:.4f} (step {value[1]})"
    if key.endswith("/s"):
        return f"{value:,.0f}"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def markdown(names: list[str], summaries: list[dict], pngs: list[str]) -> str:
    keys = []
    for s in summaries:
        keys += [k for k in s if k not in keys]
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_cell(k, s.get(k)) for s in summaries) + " |")
    text = ["# Runs compared", "", *lines, ""]
    text += [f"![{os.path.basename(p)[:-4]}]({os.path.basename(p)})" for p in pngs]
    return "\n".join(text) + "\n"


def plot(runs: list[dict], names: list[str], out_dir: str) -> list[str]:
    """One PNG per curve, every run that has it overlaid."""
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    wanted = []
    for run in runs:
        for split, metrics in run["curves"].items():
            for name in metrics:
                skip = name in _NOT_CURVES or name.endswith("_per_s") or (
                    split == "train" and name != "loss")
                if not skip and (split, name) not in wanted:
                    wanted.append((split, name))
    paths = []
    for split, name in sorted(wanted, key=lambda sn: (sn[0] != "train", sn)):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for run, label in zip(runs, names):
            if name in run["curves"].get(split, {}):
                steps, values = run["curves"][split][name]
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                        label=label)
        ax.set(xlabel="step", ylabel=name, title=f"{split} {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        path = os.path.join(out_dir, f"{split}_{name}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def report(workdirs: list[str], out_dir: str) -> str:
    """Writes the PNG curves and report.md into `out_dir`; returns the Markdown."""
    runs = [load_run(w) for w in workdirs]
    names = labels(workdirs)
    os.makedirs(out_dir, exist_ok=True)
    pngs = plot(runs, names, out_dir)
    text = markdown(names, [summarize(r) for r in runs], pngs)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    return text
