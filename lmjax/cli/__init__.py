"""The commands: `lmjax <command> [flags]` (the console script, after `pip install -e .`), or
`python -m lmjax <command> [flags]` from a checkout. One module each, lmjax/cli/<command>.py.

Each command module has a docstring (its --help text, with an example), absl flags, and
`main(args)`; `common.run` gives them all the same flag parsing and the same one-line errors.
COMMANDS is the one list of them: `lmjax --help` prints it and the tests read it.
"""

from __future__ import annotations

import importlib
import sys

from lmjax.cli import common

# command -> what it does, in one line (lmjax --help)
COMMANDS = {
    "train": "train (or resume) a run, evaluate it, checkpoint it and sample from it",
    "evaluate": "evaluate a saved run over a whole split",
    "harness": "lm-evaluation-harness tasks on a run, in process (no server)",
    "generate": "continue prompts (or answer questions) with a trained language model",
    "serve": "serve a run over HTTP: OpenAI's completions, the playground, metrics",
    "quantize": "int8 weight quantization of a trained GPT, as its own run directory",
    "convert": "convert weights between lmjax and Hugging Face (to_hf, from_hf)",
    "bench": "benchmark a config's train step: step time, tokens/s, MFU, memory",
    "bench_generate": "benchmark generation: tokens/s, time to first token, the server",
    "sweep": "hyperparameter search on Optuna, and its report",
    "report": "compare runs: curves and a side-by-side summary",
    "sklearn_baseline": "scikit-learn's linear models on a tabular config's split",
    "prepare_data": "stream, clean, deduplicate and tokenize a large corpus into shards",
    "qa_data": "write the Shakespeare QA set (closed-book, or the open-book twin) as JSONL",
    "addition_data": "write two-digit addition problems (a held-out split) as JSONL",
    "scrub": "mask personal data (PII) in a text or JSONL file",
    "exposure": "the Secret Sharer test: how much a run memorised canaries",
    "membership": "a membership-inference attack on a trained classifier",
    "robustness": "accuracy of an image classifier under FGSM and PGD attacks",
    "explain": "explain a run's predictions: attributions and attention maps",
    "compress_report": "a table of a run and its compressed variants",
}
POSITIONAL = {"convert": 1, "report": 64}  # convert to_hf|from_hf; report <workdir> ...


def usage() -> str:
    rows = "\n".join(f"  {name:<17} {summary}" for name, summary in COMMANDS.items())
    return ("usage: lmjax <command> [flags]   (or python -m lmjax <command> [flags])\n"
            "       lmjax <command> --help    its flags and examples\n\n"
            f"commands:\n{rows}")


def launch(name: str) -> None:
    common.run(importlib.import_module(f"lmjax.cli.{name}"), POSITIONAL.get(name, 0))


def main() -> None:
    """`lmjax <command> [flags]`: the console script and `python -m lmjax`."""
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name in ("--help", "-h", "help"):
        print(usage())
        return
    if not name:
        print(usage(), file=sys.stderr)
        sys.exit(2)
    if name not in COMMANDS:
        common.fail(f"unknown command {name!r}: give one of {', '.join(COMMANDS)} "
                    "(lmjax --help says what each does)")
    sys.argv[:] = [f"lmjax {name}", *sys.argv[2:]]
    launch(name)
