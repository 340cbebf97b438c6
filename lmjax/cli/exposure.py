"""The Secret Sharer test (Carlini et al., 2019): how much a language-model run memorised canaries.

    lmjax exposure --workdir=runs/gpt --canary="My ID is 281739452."
    lmjax exposure --workdir=runs/A-canary/plain --canaries=corpus/canaries.json

Prints each canary's exposure in bits: log2 of the candidate space (10^9 for 9 digits) minus
log2 of the canary's rank by the model's likelihood among random candidates of the same
format, estimated from --candidates random ones (capped at log2 of that many) and by the
paper's skew-normal extrapolation. About 1 bit or less: not memorised; 10 or more: the model
would give the secret away. The secret is the digits after --prefix. --canaries reads a JSON
file {canary: insertions} (benchmarks/canary.py writes one). How: lmjax/privacy/exposure.py.
"""

from __future__ import annotations

import json

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.infer.load import load
from lmjax.privacy import exposure

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained language-model run.")
_CANARY = flags.DEFINE_multi_string("canary", [], "A canary as inserted in the training text.")
_CANARIES = flags.DEFINE_string("canaries", "", "A JSON file {canary: times inserted}.")
_PREFIX = flags.DEFINE_string("prefix", exposure.DEFAULT_PREFIX, "The text before the secret.")
_SUFFIX = flags.DEFINE_string("suffix", exposure.DEFAULT_SUFFIX, "The text after the secret.")
_CANDIDATES = flags.DEFINE_integer("candidates", 10_000, "Random candidates to rank against.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the candidates.")
_BATCH = flags.DEFINE_integer("batch_size", 1024, "Candidates scored per model call.")
_BEST = flags.DEFINE_bool("best", False, "Use the run's best checkpoint.")
_OUT = flags.DEFINE_string("out", "", "Also write the figures to this JSON file.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained language-model run.")
    canaries = {c: None for c in _CANARY.value}
    if _CANARIES.value:
        try:
            with open(_CANARIES.value) as f:
                canaries.update(json.load(f))
        except (OSError, ValueError) as e:
            fail(f"--canaries={_CANARIES.value!r}: cannot read a JSON object {{canary: count}} "
                 f"({e}).")
    if not canaries:
        fail('give --canary="My ID is 281739452." (or --canaries=file.json).')
    if _CANDIDATES.value < 100:
        fail(f"--candidates={_CANDIDATES.value}: use at least 100 (10000 gives a 13.3-bit cap).")
    loaded = load(workdir, best=_BEST.value)
    logprob = exposure.model_logprob_fn(loaded.model, loaded.params)
    print(f"model: {loaded.source}")
    back = loaded.tokenizer.decode(loaded.tokenizer.encode("0123456789"))
    missing = [d for d, b in zip("0123456789", back) if d != b] if len(back) == 10 else []
    if missing:
        print(f"note: the run's tokenizer has no token for the digit(s) {''.join(missing)}: its "
              "training text never had them (e.g. scrubbed), so they all look alike to it.")
    results = []
    for canary, count in canaries.items():
        e = exposure.measure(logprob, loaded.tokenizer, canary, _PREFIX.value, _SUFFIX.value,
                             _CANDIDATES.value, _SEED.value, _BATCH.value)
        inserted = "" if count is None else f" [inserted {count}x]"
        print(e.line() + inserted)
        results.append({**e.__dict__, "inserted": count})
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"workdir": workdir, "results": results}, f, indent=1)
