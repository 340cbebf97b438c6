"""Continue prompts with a trained language model: a GPT or LSTM/GRU run, or an int8 export.

    lmjax generate --workdir=runs/gpt --prompt="ROMEO:" --max_new_tokens=200
    lmjax generate --workdir=runs/gpt --prompt="ROMEO:" --prompt="JULIET:" \\
        --temperature=0.8 --top_k=40 --top_p=0.95 --seed=1 --stop=$'\\n\\n'
    lmjax generate --workdir=runs/gpt-int8 --prompt="KING:" --stream
    lmjax generate --workdir=runs/qa-sft --prompt="In which play does Prospero appear?"
    lmjax generate --workdir=runs/qa-sft --questions=runs/qa_data/val.jsonl
    lmjax generate --workdir=runs/qa-base --template=qa --few_shot=3 \\
        --few_shot_file=runs/qa_data/train.jsonl --questions=runs/qa_data/val.jsonl

--workdir is a training run (its latest checkpoint, or --best) or an int8 export written by
`lmjax quantize`; only the directory is read, not the corpus. Several --prompt flags
run as one batch; --num_samples repeats each prompt with seeds seed, seed+1, ... Temperature 0
is greedy decoding.

Question answering: a run fine-tuned with task=sft (or dpo, grpo) wraps each prompt in its template
(`Question: {prompt}\\nAnswer: {response}` by default) and stops at its stop strings, both
from its run.json; --template=qa (or a template string) does the same for any run, --template=none
turns it off. --questions=FILE.jsonl answers every record's prompt greedily and prints exact
match and F1 (SQuAD's definitions) against its response; --few_shot=N puts the first N records
of --few_shot_file before each question (the few-shot baseline of a base model).

Preference pairs for DPO from a model's own mistakes (docs/posttraining.md):

    lmjax generate --workdir=runs/qa-sft --questions=runs/qa_data/train.jsonl \\
        --pairs_out=runs/qa_pairs/train.jsonl

writes {prompt, chosen, rejected, answers} for each question answered wrongly: chosen is the
reference, rejected the model's greedy answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.data import sft
from lmjax.eval import qa
from lmjax.infer.load import load
from lmjax.models.generator import Generator, Request
from lmjax.tasks.base import ANSWERS

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir or an int8 export directory.")
_PROMPT = flags.DEFINE_multi_string("prompt", ["\n"], "Prompt text; repeat for a batch.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0: greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Sample from the smallest set with this much "
                            "probability (1: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the first sample.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop at this string (repeatable; not printed).")
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
_BEST = flags.DEFINE_bool("best", False, "Use the run's best checkpoint instead of its latest.")
_STREAM = flags.DEFINE_bool("stream", False, "Print text as it is generated.")
_TEMPLATE = flags.DEFINE_string(
    "template", "", "Wrap prompts in a QA template: '' (the run's own if it is an SFT run), "
    "'qa' (Question: {prompt}\\nAnswer: {response}), 'none', or a template string ending "
    "with {response}.")
_QUESTIONS = flags.DEFINE_string("questions", "", "A JSONL file of {'prompt', 'response'} "
                                 "records: answer each greedily, print exact match and F1.")
_FEW_SHOT = flags.DEFINE_integer("few_shot", 0, "Examples from --few_shot_file put before each "
                                 "question (with the template).")
_FEW_SHOT_FILE = flags.DEFINE_string("few_shot_file", "", "JSONL records for --few_shot.")
_PAIRS = flags.DEFINE_string("pairs_out", "", "With --questions: write a DPO preference pair "
                             "(chosen: the reference, rejected: the answer) for each question "
                             "answered wrongly to this JSONL file.")
_SHOW = flags.DEFINE_integer("show", 10, "With --questions: answers printed next to their "
                             "references.")


def _template(loaded) -> tuple[str, tuple[str, ...]]:
    """(template or '', default stop strings) for this run and the flags."""
    run_sft = loaded.cfg.sft if ANSWERS in loaded.capabilities else None
    choice = _TEMPLATE.value
    if choice == "none" or (not choice and run_sft is None):
        return "", ()
    template = (run_sft.template if not choice else
                sft.DEFAULT_TEMPLATE if choice == "qa" else choice.replace("\\n", "\n"))
    try:
        sft.check_template(template)
    except sft.SFTDataError as e:
        fail(f"--template: {e}")
    return template, tuple(run_sft.stop) if run_sft is not None else (sft.DEFAULT_END,)


def _shots(template: str, end: str) -> str:
    if _FEW_SHOT.value <= 0:
        return ""
    if not template:
        fail("--few_shot needs a template (--template=qa, or an SFT run).")
    records = sft.read_jsonl(require(_FEW_SHOT_FILE.value, "--few_shot needs --few_shot_file "
                                     "(JSONL records of prompt and response)."))
    if len(records) < _FEW_SHOT.value:
        fail(f"--few_shot={_FEW_SHOT.value}: {_FEW_SHOT_FILE.value} has {len(records)} records.")
    if not all(isinstance(r.get("prompt"), str) and isinstance(r.get("response"), str)
               for r in records[:_FEW_SHOT.value]):
        fail(f"--few_shot_file: its first {_FEW_SHOT.value} records need string 'prompt' and "
             "'response' fields.")
    return "".join(sft.format_prompt(template, r["prompt"]) + r["response"] + end
                   for r in records[:_FEW_SHOT.value])


def _answer_file(gen, template: str, stop: tuple[str, ...], shots: str) -> None:
    """Greedy answers to every question of --questions, scored against the references."""
    records = sft.read_jsonl(_QUESTIONS.value)
    bad = [i for i, r in enumerate(records, 1) if not isinstance(r.get("prompt"), str)]
    if bad:
        fail(f"--questions: record {bad[0]} has no string 'prompt'.")
    prompts = [shots + (sft.format_prompt(template, r["prompt"]) if template else r["prompt"])
               for r in records]
    requests = [Request(prompt=p, max_new_tokens=_MAX_NEW.value, temperature=0.0, stop=stop)
                for p in prompts]
    answers = [c.text.strip() for c in gen.generate(requests)]
    refs = [qa.references(r) for r in records]
    for r, a, ref in list(zip(records, answers, refs))[:_SHOW.value]:
        print(f"{r['prompt']!r} -> {a!r} (reference {ref[0]!r})")
    scores = qa.scores(answers, refs)
    by_kind = {}
    for r, a, ref in zip(records, answers, refs):
        by_kind.setdefault(r.get("kind", "all"), []).append((a, ref))
    kinds = {k: qa.scores([a for a, _ in v], [ref for _, ref in v]) for k, v in by_kind.items()}

    def rounded(d):
        return {"count": d["count"], "exact_match": round(d["exact_match"], 2),
                "f1": round(d["f1"], 2)}

    print(json.dumps({"questions": len(records), **rounded(scores), "few_shot": _FEW_SHOT.value,
                      "by_kind": {k: rounded(v) for k, v in kinds.items()}}))
    if _PAIRS.value:
        _write_pairs(records, answers, refs)


def _write_pairs(records: list[dict], answers: list[str], refs: list[list[str]]) -> None:
    """A pair for each answer that matches none of its references (SQuAD's exact match)."""
    pairs = [{"prompt": r["prompt"], "chosen": ref[0], "rejected": a, "answers": ref}
             for r, a, ref in zip(records, answers, refs)
             if qa.best(qa.exact_match, a, ref) < 1]
    os.makedirs(os.path.dirname(os.path.abspath(_PAIRS.value)), exist_ok=True)
    with open(_PAIRS.value, "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs)
    print(f"{len(pairs)} preference pairs (of {len(records)} questions) -> {_PAIRS.value}",
          file=sys.stderr)


def _requests() -> list[Request]:
    if _MAX_NEW.value < 1:
        fail(f"--max_new_tokens={_MAX_NEW.value}: must be at least 1.")
    if _TEMPERATURE.value < 0 or _TOP_K.value < 0 or not 0 < _TOP_P.value <= 1:
        fail("--temperature and --top_k must be >= 0 and --top_p in (0, 1].")
    if _NUM.value < 1:
        fail(f"--num_samples={_NUM.value}: must be at least 1.")
    return [Request(prompt=p, max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                    top_k=_TOP_K.value, top_p=_TOP_P.value, seed=_SEED.value + i,
                    stop=tuple(_STOP.value))
            for p in _PROMPT.value for i in range(_NUM.value)]


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: a run's workdir or an int8 export.")
    requests = _requests()
    loaded = load(workdir, best=_BEST.value)
    model, params = loaded.model, loaded.params  # LoRA adapters already folded in (load)
    template, stop = _template(loaded)
    shots = _shots(template, sft.DEFAULT_END if not loaded.cfg.get("sft") else
                   loaded.cfg.sft.end)
    print(f"Model: {loaded.source}", file=sys.stderr)
    if _PAIRS.value and not _QUESTIONS.value:
        fail("--pairs_out needs --questions (the questions to answer).")
    if _QUESTIONS.value:
        gen = Generator(model, params, loaded.tokenizer, max_batch=64)
        _answer_file(gen, template, tuple(_STOP.value) or stop, shots)
        return
    if template:
        requests = [dataclasses.replace(r, prompt=shots + sft.format_prompt(template, r.prompt),
                                        stop=r.stop or stop) for r in requests]
    gen = Generator(model, params, loaded.tokenizer, max_batch=len(requests))
    t = time.perf_counter()
    if _STREAM.value:
        completions = []
        for i, r in enumerate(requests):
            print(f"--- {i}: {r.prompt!r} ---\n{r.prompt}", end="", flush=True)
            for rows in gen.stream([r], chunk=1):
                print(rows[0].take_new(), end="", flush=True)
            print()
            completions += rows
    else:
        completions = gen.generate(requests)
        for i, (r, c) in enumerate(zip(requests, completions)):
            print(f"--- {i}: {r.prompt!r} (seed {r.seed}, {len(c.tokens)} tokens, "
                  f"{c.finish_reason}) ---\n{r.prompt}{c.text}")
    seconds = time.perf_counter() - t
    print(f"{sum(len(c.tokens) for c in completions)} tokens in {seconds:.2f}s (compilation "
          "included)", file=sys.stderr)
