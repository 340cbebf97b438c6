"""The Secret Sharer experiment's corpus: Shakespeare plays with 9-digit ID canaries inserted.

    python benchmarks/canary.py --out=runs/A-canary/corpus          # writes train.txt, val.txt,
                                                                     # canaries.json
    lmjax train --config=configs/gpt.py --config.data.name=files \
        --config.data.files=runs/A-canary/corpus/*.txt --config.train.num_steps=500 \
        --workdir=runs/A-canary/plain               # and with --config.data.scrub_pii=True
    lmjax exposure --workdir=runs/A-canary/plain \
        --canaries=runs/A-canary/corpus/canaries.json

Each canary "My ID is <9 random digits>." goes into the training file k times (one canary per
k in --counts), so one run shows exposure against k. val.txt (sorted last, so held out whole
by data.name=files) has none.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from lmjax.data import shakespeare
from lmjax.privacy import exposure

# About 285k characters: small enough for the default char GPT to see it a few times in minutes.
TRAIN_PLAYS = ["comedy_of_errors", "pericles", "tempest"]
VAL_PLAY = "romeo_and_juliet"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--counts", default="1,4,16,64", help="insertions of each canary")
    p.add_argument("--seed", type=int, default=18)
    a = p.parse_args()
    works = shakespeare.works()
    rng = np.random.default_rng(a.seed)
    counts = [int(k) for k in a.counts.split(",")]
    canaries = {exposure.DEFAULT_PREFIX + exposure.random_secret(rng) + exposure.DEFAULT_SUFFIX: k
                for k in counts}
    train = exposure.insert_canaries("\n\n".join(works[n] for n in TRAIN_PLAYS), canaries,
                                     seed=a.seed)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "train.txt"), "w") as f:
        f.write(train)
    with open(os.path.join(a.out, "val.txt"), "w") as f:
        f.write(works[VAL_PLAY])
    with open(os.path.join(a.out, "canaries.json"), "w") as f:
        json.dump(canaries, f, indent=1)
    for c, k in canaries.items():
        assert exposure.count_canary(train, c) == k
        print(f"{c!r} inserted {k} times")
    print(f"train.txt: {len(train):,} chars; val.txt: {len(works[VAL_PLAY]):,} chars "
          f"({', '.join(sorted(set(c for c in train if c.isdigit())))} digits seen)")


if __name__ == "__main__":
    main()
