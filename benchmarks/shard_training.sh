#!/bin/bash
# Training tokens/s: the default run's prepared array against the same tokens as 8 llm.c
# shards (docs/data.md, "Training from shards"). Two alternating pairs of 300-step runs of
# configs/gpt.py; prints each run's median logged tokens/s and its last logged losses, which
# must be identical (the batches are).
set -e
cd "$(dirname "$0")/.."
DIR=${DIR:-/tmp/lmjax-shard-bench}
mkdir -p "$DIR/shards"
python - "$DIR" <<'PY'
import os, sys
import numpy as np
from lmjax.config import load_config
from lmjax.data import shards
from lmjax.data.prepare import prepare

out = sys.argv[1]
data = prepare(load_config("configs/gpt.py").data, log=lambda s: None)
for i, part in enumerate(np.array_split(np.asarray(data.train), 8)):
    shards.write_shard(f"{out}/shards/x_train_{i:06d}.bin", part.astype(np.uint16))
shards.write_shard(f"{out}/shards/x_val_000000.bin", np.asarray(data.val).astype(np.uint16))
with open(f"{out}/tokenizer_path", "w") as f:
    f.write(os.path.join(data.directory, "tokenizer.json"))
print(f"{len(data.train):,} training tokens in 8 shards under {out}/shards")
PY
TOK=$(cat "$DIR/tokenizer_path")
for pair in 1 2; do
  for src in array shards; do
    rm -rf "$DIR/run-$src"
    extra=()
    if [ $src = shards ]; then
      extra=(--config.data.name=shards "--config.data.shards=$DIR/shards/x_train_*.bin"
             "--config.data.tokenizer_file=$TOK")
    fi
    python -m lmjax train --config=configs/gpt.py --workdir="$DIR/run-$src" \
      --config.train.num_steps=300 --config.train.eval_every=100000 \
      --config.train.log_every=50 --config.sample.num_samples=0 \
      --config.train.final_eval_examples=64 "${extra[@]}" > "$DIR/run-$src.log" 2>&1
    python - "$DIR/run-$src/metrics.jsonl" "$pair $src" <<'PY'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1])]
train = [r for r in records if r["split"] == "train"]
rates = [r["tokens_per_s"] for r in train if "tokens_per_s" in r]
losses = ", ".join(f"{r['step']}: {r['loss']:.4f}" for r in train[-3:])
print(f"{sys.argv[2]:>8}: median {statistics.median(rates):,.0f} tokens/s; loss {losses}")
PY
  done
done
