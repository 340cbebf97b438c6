"""Run EleutherAI lm-evaluation-harness tasks on a run, in process: no server, every request
of a task batched by length through the one decoder (docs/evaluation.md).

    lmjax harness --workdir=runs/gpt --tasks=my_mc,my_gen --include_path=my_tasks/
    lmjax harness --workdir=runs/gpt --tasks=hellaswag,arc_easy --limit=500
    lmjax harness --workdir=runs/qa-sft --tasks=my_gen --include_path=my_tasks/ \\
        --apply_chat_template --output=runs/qa-sft/harness.json --log_samples
    python -m lmjax harness --workdir=runs/gpt --tasks=my_mc --include_path=my_tasks/

Offline, tasks come from local YAML files in --include_path (a `json` dataset each; lm-eval's
own task files work there too). With network, lm-eval's task names work as they are
(hellaswag, arc_easy, ...): their datasets download from the Hugging Face Hub once.

Prints lm-eval's table and one JSON line of '<task>/<metric>' scores; --output writes
lm-eval's whole results as JSON (with --log_samples, every request and response too).
--apply_chat_template renders prompts with the run's chat format (lmjax/data/chat.py), as the
server's /v1/chat/completions does. Needs lm-eval: pip install "lm_eval[api]" (in the test
extra).
"""

from __future__ import annotations

import json
import os

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.data.chat import ChatFormat
from lmjax.eval import harness
from lmjax.infer.load import load
from lmjax.tasks.base import ANSWERS, DECODES

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir (or an int8 export).")
_BEST = flags.DEFINE_bool("best", False, "Use the run's best checkpoint instead of its latest.")
_TASKS = flags.DEFINE_string("tasks", None, "lm-eval task names, comma-separated.")
_INCLUDE = flags.DEFINE_string("include_path", "", "A folder of task YAML files (offline).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Documents per task (0: all).")
_FEWSHOT = flags.DEFINE_integer("num_fewshot", -1, "Examples before each question (-1: each "
                                "task's own).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Rows scored or generated together.")
_MAX_GEN = flags.DEFINE_integer("max_gen_toks", 256, "generate_until's answer length, where a "
                                "task does not set it.")
_CHAT = flags.DEFINE_bool("apply_chat_template", False, "Render prompts as a chat with the "
                          "run's chat format.")
_SAMPLES = flags.DEFINE_bool("log_samples", False, "Keep every request and response in "
                             "--output.")
_OUTPUT = flags.DEFINE_string("output", "", "Write lm-eval's results here (JSON).")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap_iters", 1000, "Resamples for the standard errors "
                                  "of metrics that are not means (0: none).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of few-shot sampling and of sampled answers.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: a run's workdir.")
    tasks = [t.strip() for t in require(_TASKS.value, "give --tasks: lm-eval task names, "
                                        "comma-separated.").split(",") if t.strip()]
    if _INCLUDE.value and not os.path.isdir(_INCLUDE.value):
        fail(f"--include_path={_INCLUDE.value!r} is not a folder of task YAML files.")
    if _BATCH.value < 1 or _MAX_GEN.value < 1 or _LIMIT.value < 0:
        fail("--batch_size and --max_gen_toks must be at least 1, --limit 0 or more.")
    try:
        import lm_eval  # noqa: F401, lazy, optional extra: a clear message without it
    except ModuleNotFoundError:
        fail('the harness needs lm-eval: pip install "lm_eval[api]" (or the test extra).')
    loaded = load(workdir, best=_BEST.value, needs=(DECODES,))
    sft = (loaded.cfg.sft.template, loaded.cfg.sft.end) if ANSWERS in loaded.capabilities \
        else ()
    results = harness.run(
        loaded.model, loaded.params, loaded.tokenizer, tasks, include_path=_INCLUDE.value,
        limit=_LIMIT.value, num_fewshot=_FEWSHOT.value, batch_size=_BATCH.value,
        max_gen_toks=_MAX_GEN.value, chat=ChatFormat.for_run(loaded.tokenizer, *sft),
        apply_chat_template=_CHAT.value, log_samples=_SAMPLES.value,
        bootstrap_iters=_BOOTSTRAP.value, seed=_SEED.value)
    from lm_eval.utils import make_table  # noqa: lazy, optional extra (checked above)

    print(f"Model: {loaded.source}")
    print(make_table(results))
    print(json.dumps(harness.scalars(results)))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"Wrote {_OUTPUT.value}")
