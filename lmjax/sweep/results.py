"""The end of a sweep: the trials sorted by the objective, the best config as a command, plots."""

from __future__ import annotations

import importlib.util
import os
import shlex
import warnings
from collections import Counter

import optuna
from optuna.trial import TrialState

from lmjax.sweep.spec import Sweep

# Report order, and the words for each state.
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
_ORDER = {s: i for i, s in enumerate(STATES)}
# Why a trial was run again (the retry's retry_cause), for one trial and for several.
RETRY_CAUSES = {"died": ("after its worker died", "after their workers died"),
                "interrupted": ("after an interruption", "after interruptions")}


def current_trials(study: optuna.Study) -> list:
    """Every trial but those run again after their worker died (the retry stands for them)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if t.number not in retried]


def retried(study: optuna.Study) -> str:
    """'1 retried after its worker died', ...: the trials a retry stands for (the database
    keeps them as failed, but they did not fail by themselves); '' when none."""
    counts = Counter(t.user_attrs.get("retry_cause", "died")  # one retry per trial it replaces
                     for t in study.get_trials(deepcopy=False) if "retry_of" in t.user_attrs)
    return ", ".join(f"{counts[c]} retried {words[counts[c] > 1]}"
                     for c, words in RETRY_CAUSES.items() if counts[c])


def _score(t) -> float | None:
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.intermediate_values:  # pruned (or running): its last reported value
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def sorted_trials(study: optuna.Study) -> list:
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1

    def key(t):
        s = _score(t)
        return (_ORDER[t.state], 0 if s is not None else 1, sign * s if s is not None else 0,
                t.number)
    return sorted(current_trials(study), key=key)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table(study: optuna.Study, sweep: Sweep) -> str:
    names = list(sweep.space)
    head = ["trial", "state", sweep.metric, *names, "steps", "time", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for t in sorted_trials(study):
        score = _score(t)
        wall = t.user_attrs.get("wall_time_s")
        row = [str(t.number), STATES[t.state], "" if score is None else f"{score:.4f}",
               *[_fmt(t.params[n]) if n in t.params else "" for n in names],
               str(t.user_attrs.get("steps", "")), "" if wall is None else f"{wall:.0f}s",
               _note(t).replace("|", "/")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _note(t) -> str:
    if "retry_of" not in t.user_attrs:
        return t.user_attrs.get("note", "")
    return "; ".join(filter(None, [f"retry of trial {t.user_attrs['retry_of']}",
                                   t.user_attrs.get("note", "")]))


def _arg(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def command(config_arg: str, values: dict, workdir: str) -> str:
    """`lmjax train ...` that trains the given config (fixed fields, then searched)."""
    parts = ["lmjax", "train", f"--config={config_arg}"]
    parts += [f"--config.{k}={_arg(v)}" for k, v in values.items()]
    parts.append(f"--workdir={workdir}")
    return " ".join(shlex.quote(p) for p in parts)


def best_trial(study: optuna.Study):
    done = [t for t in current_trials(study) if t.state == TrialState.COMPLETE]
    return sorted_trials(study)[0] if done else None


def plots(study: optuna.Study, out_dir: str) -> tuple[list[str], list[str]]:
    """Optimisation history, parameter importances, parallel coordinates and the intermediate
    values, as PNG files; returns (written paths, notes on plots that could not be drawn)."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vm

    # fANOVA (Optuna's default) needs scikit-learn; PED-ANOVA does not.
    evaluator = (None if importlib.util.find_spec("sklearn")
                 else optuna.importance.PedAnovaImportanceEvaluator())
    drawings = {
        "history": vm.plot_optimization_history,
        "importances": lambda s: vm.plot_param_importances(s, evaluator=evaluator),
        "parallel_coordinates": vm.plot_parallel_coordinate,
        "intermediate_values": vm.plot_intermediate_values,
    }
    os.makedirs(out_dir, exist_ok=True)
    written, notes = [], []
    for name, draw in drawings.items():
        path = os.path.join(out_dir, f"{name}.png")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" notices on every plot
                ax = draw(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            notes.append(f"{name}: not drawn ({e})")
    return written, notes


def write_report(study: optuna.Study, sweep: Sweep, sweep_dir: str, config_arg: str,
                 fixed: dict) -> str:
    """Writes report.md, best_command.txt and plots/*.png in the sweep directory; returns the
    report's text."""
    trials = current_trials(study)
    counts = {word: sum(t.state == s for t in trials) for s, word in STATES.items()}
    summary = "; ".join(filter(None, [", ".join(f"{n} {k}" for k, n in counts.items() if n),
                                      retried(study)]))
    text = [f"# Sweep {study.study_name}: {sweep.algorithm}, {sweep.direction} val {sweep.metric}",
            "", f"{len(trials)} of {sweep.budget()} trials: {summary}.", "", table(study, sweep), ""]
    best = best_trial(study)
    if best is not None:
        cmd = command(config_arg, {**fixed, **best.params}, os.path.join(sweep_dir, "best"))
        with open(os.path.join(sweep_dir, "best_command.txt"), "w") as f:
            f.write(cmd + "\n")
        text += [f"Best: trial {best.number}, val {sweep.metric} {best.value:.4f} "
                 f"(run in {os.path.join(sweep_dir, best.user_attrs.get('workdir', ''))}). "
                 "To train it:", "", "```", cmd, "```", ""]
    written, notes = plots(study, os.path.join(sweep_dir, "plots"))
    text += [f"![{os.path.basename(p)[:-4]}](plots/{os.path.basename(p)})" for p in written]
    text += notes
    report = "\n".join(text).rstrip() + "\n"
    with open(os.path.join(sweep_dir, "report.md"), "w") as f:
        f.write(report)
    return report
