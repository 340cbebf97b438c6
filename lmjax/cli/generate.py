"""Continue prompts with a trained GPT (a run's workdir, or an int8 export).

    python -m lmjax.generate --workdir=runs/gpt --prompt="ROMEO:" --max_new_tokens=200
    python -m lmjax.generate --workdir=runs/gpt --prompt="ROMEO:" --prompt="JULIET:" \\
        --temperature=0.8 --top_k=40 --top_p=0.95 --seed=1 --stop=$'\\n\\n'
    python -m lmjax.generate --workdir=runs/gpt-int8 --prompt="KING:" --stream

--workdir is a training run (its latest checkpoint, or --best) or an int8 export written by
`python -m lmjax.quantize`; only the directory is read, not the corpus. Several --prompt flags
run as one batch; --num_samples repeats each prompt with seeds seed, seed+1, ... Temperature 0
is greedy decoding.
"""

from __future__ import annotations

import sys
import time

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.infer.generator import Generator, Request
from lmjax.infer.load import load

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
    gen = Generator(loaded.model, loaded.params, loaded.tokenizer, max_batch=len(requests))
    print(f"Model: {loaded.source}", file=sys.stderr)
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
