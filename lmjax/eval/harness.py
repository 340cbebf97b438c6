"""EleutherAI's lm-evaluation-harness tasks on an lmjax model, in process: the `lmjax
harness` command on a run directory, and during training every N steps (the `eval` section).

    results = run(model, params, tokenizer, ["hellaswag", "arc_easy"])  # names: lm-eval's
    results = run(..., ["my_task"], include_path="tasks/")              # local YAML files
    scalars(results)  # {'hellaswag/acc': ..., 'hellaswag/acc_norm': ..., ...}

lm-eval's own tasks download their datasets from the Hugging Face Hub on first use; offline,
tasks defined in local YAML files (`dataset_path: json` with `data_files`) run from
`include_path`. The model side is lmjax/eval/harness_lm.py (lm_eval's `LM` interface over the
one decoder); this module stays light (no JAX, no lm_eval) until tasks run, since configs
import it for its section.

The `eval` section (added with `configs/<file>.py:<preset>+eval`, or by a config itself):
`harness_tasks` (comma-separated; '' is off), run every `harness_every` steps (0: at each
`train.eval_every`) and after the last step, with `harness_limit` documents per task (0: all),
`harness_num_fewshot` (-1: each task's own), `harness_include_path`, `harness_batch_size` and
`harness_max_gen_toks`. The results are logged like any evaluation, as split 'harness':
'<task>/<metric>' in metrics.jsonl and TensorBoard.
"""

from __future__ import annotations

import functools

import ml_collections

from lmjax.config import require

SECTION = "eval"
STATE_DEFINING: dict = {}  # evaluation only: the saved state does not change


def section() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    e.harness_tasks = ""           # lm-eval task names, comma-separated ('': no harness)
    e.harness_every = 0            # steps between runs (0: train.eval_every); also at the end
    e.harness_include_path = ""    # a folder of task YAML files (offline tasks)
    e.harness_limit = 0            # documents per task (0: all)
    e.harness_num_fewshot = -1     # -1: each task's own
    e.harness_batch_size = 32      # rows scored or generated together
    e.harness_max_gen_toks = 256   # generate_until's default answer length
    return e


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    """Never wraps the task: the training loop runs the harness (lmjax/train/loop.py)."""
    return False


def tasks(cfg: ml_collections.ConfigDict) -> list[str]:
    """The harness tasks a config asks for during training."""
    e = cfg.get(SECTION)
    return [t.strip() for t in e.harness_tasks.split(",") if t.strip()] if e else []


def due(cfg: ml_collections.ConfigDict, step: int) -> bool:
    """Whether the harness runs after `step` (the loop also runs it after the last step)."""
    if not tasks(cfg):
        return False
    return step % (cfg.eval.harness_every or cfg.train.eval_every) == 0


def check(cfg: ml_collections.ConfigDict) -> None:
    e = cfg.eval
    require(isinstance(e.harness_tasks, str), f"eval.harness_tasks={e.harness_tasks!r}: "
            "lm-eval task names, comma-separated, e.g. 'hellaswag,arc_easy'.")
    for field in ("harness_every", "harness_limit"):
        require(isinstance(e[field], int) and e[field] >= 0,
                f"eval.{field}={e[field]!r}: a whole number, 0 or more.")
    for field in ("harness_batch_size", "harness_max_gen_toks"):
        require(isinstance(e[field], int) and e[field] >= 1,
                f"eval.{field}={e[field]!r}: a whole number, at least 1.")
    require(isinstance(e.harness_num_fewshot, int) and e.harness_num_fewshot >= -1,
            f"eval.harness_num_fewshot={e.harness_num_fewshot!r}: -1 (each task's own) or more.")


def run(model, params, tokenizer, task_names: list[str], *, include_path: str = "",
        limit: int = 0, num_fewshot: int = -1, batch_size: int = 32, max_gen_toks: int = 256,
        chat=None, apply_chat_template: bool = False, log_samples: bool = False,
        bootstrap_iters: int = 0, seed: int = 0) -> dict:
    """lm-eval's `simple_evaluate` of the tasks on the model: its results dict ('results',
    'configs', 'samples' with `log_samples`, ...). `chat` (a data.chat.ChatFormat) renders
    prompts with `apply_chat_template`. Task names that lm-eval does not know are one error
    naming them."""
    import lm_eval  # noqa: lazy, optional extra (lm_eval[api], in the test extra)

    from lmjax.eval.harness_lm import LmjaxLM  # noqa: lazy, imports lm_eval

    manager = task_manager(include_path, task_names)
    unknown = [t for t in task_names if not manager.match_tasks([t])]
    if unknown:
        where = f" or in {include_path}" if include_path else " (--include_path: local YAML)"
        raise ValueError(f"unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's "
                         f"tasks{where}.")
    lm = LmjaxLM(model, params, tokenizer, batch_size=batch_size, max_gen_toks=max_gen_toks,
                 chat=chat)
    return lm_eval.simple_evaluate(
        model=lm, tasks=task_names, task_manager=manager, limit=limit or None,
        num_fewshot=None if num_fewshot < 0 else num_fewshot, log_samples=log_samples,
        bootstrap_iters=bootstrap_iters, apply_chat_template=apply_chat_template,
        random_seed=seed, numpy_random_seed=seed, fewshot_random_seed=seed)


@functools.lru_cache(maxsize=4)
def _manager(include_path: str, defaults: bool):
    from lm_eval.tasks import TaskManager  # noqa: lazy, optional extra (lm_eval[api])

    return TaskManager(include_path=include_path or None, include_defaults=defaults)


def task_manager(include_path: str, task_names: list[str]):
    """lm-eval's index of tasks: only `include_path`'s when it holds every task asked for
    (indexing lm-eval's own thousands of YAML files takes 10-30 s), else both; kept for the
    process (a training run's repeated evaluations index once)."""
    if include_path:
        local = _manager(include_path, False)
        if all(local.match_tasks([t]) for t in task_names):
            return local
    return _manager(include_path, True)


def scalars(results: dict) -> dict[str, float]:
    """'<task>/<metric>' -> value for every numeric metric of every task (lm-eval's
    'acc,none' is 'acc'; another filter's name stays: 'exact_match,strict-match' is
    'exact_match_strict-match')."""
    out = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metric, _, filt = key.partition(",")
                out[f"{task}/{metric}{'' if filt in ('', 'none') else '_' + filt}"] = \
                    float(value)
    return out
