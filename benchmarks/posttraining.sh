#!/bin/bash
# Issue 32's acceptance runs on this CPU: GRPO on two-digit addition, and DPO and GRPO from the
# closed-book QA SFT run. The figures land in each run's metrics.jsonl ("split": "final") and
# are printed at the end; docs/posttraining.md#results records them.
#
#   bash benchmarks/posttraining.sh addition          # data, SFT baseline, GRPO (about 15 min)
#   bash benchmarks/posttraining.sh qa runs/qa-base   # SFT, pairs, DPO, GRPO (about 30 min)
#
# The QA base model is docs/finetune.md's (Results: "Question answering", step 1, 53 min).
#
# RUNS (default runs/) holds the data and the runs; a run that exists is resumed, not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
LMJAX="python -m lmjax"
QUIET="--config.log.progress_bar=False"

final() {  # the final record's exact match of a run
  python -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]+'/metrics.jsonl')]; \
f=[x for x in r if x['split']=='final']; print(sys.argv[1], 'exact match', f[-1]['qa_exact_match'])" "$1"
}

addition() {
  # The model: 2 layers, d=128, context 64 (0.4M parameters), characters of "17+27=44".
  local shape="--config.model.block_size=64 --config.model.num_layers=2 --config.model.d_model=128"
  local data="--config.data.train_file=$RUNS/add/train.jsonl --config.data.val_file=$RUNS/add/val.jsonl"
  local qa="--config.sft.max_answer_tokens=6 --config.sft.eval_questions=500"
  [ -f "$RUNS/add/train.jsonl" ] || $LMJAX addition_data --out="$RUNS/add"  # 7,600 + 500 held out
  # SFT from random weights to a baseline between 20% and 60%: exact match climbs steeply
  # between 400 and 450 steps here (17.2 at 400, 36.0 at 425, 67.6 at 450), so 425.
  time $LMJAX train --config=configs/sft.py --workdir="$RUNS/add-sft" $shape $data $qa $QUIET \
    --config.data.name=jsonl --config.data.tokenizer_file="$RUNS/add/tokenizer.json" \
    --config.train.num_steps=425 --config.train.eval_every=100000 --config.checkpoint.every=100000
  # GRPO from it with exact match as the reward: 600 steps of 8 problems x 8 samples.
  time $LMJAX train --config=configs/grpo.py --workdir="$RUNS/add-grpo" $shape $data $qa $QUIET \
    --config.init_from="$RUNS/add-sft" --config.train.eval_examples=500 \
    --config.train.final_eval_examples=500 --config.train.num_steps=600 \
    --config.train.eval_every=100 --config.train.log_every=20 --config.optim.learning_rate=3e-4
  final "$RUNS/add-sft"; final "$RUNS/add-grpo"
}

qa() {
  local base=${1:?give the QA base model run} sft="$RUNS/qa-sft"
  [ -f "$RUNS/qa_data/train.jsonl" ] || $LMJAX qa_data --out="$RUNS/qa_data"
  # SFT with configs/sft.py's defaults (docs/finetune.md's answer-only run).
  time $LMJAX train --config=configs/sft.py --workdir="$sft" --config.init_from="$base" \
    --config.sft.eval_questions=148 $QUIET
  # Pairs: the reference is chosen, the SFT model's own wrong greedy answer rejected.
  for split in train val; do
    [ -f "$RUNS/qa_pairs/$split.jsonl" ] || $LMJAX generate --workdir="$sft" --max_new_tokens=24 \
      --questions="$RUNS/qa_data/$split.jsonl" --pairs_out="$RUNS/qa_pairs/$split.jsonl" --show=0
  done
  time $LMJAX train --config=configs/dpo.py --workdir="$RUNS/qa-dpo" --config.init_from="$sft" \
    --config.data.train_file="$RUNS/qa_pairs/train.jsonl" \
    --config.data.val_file="$RUNS/qa_pairs/val.jsonl" $QUIET
  $LMJAX generate --workdir="$RUNS/qa-dpo" --questions="$RUNS/qa_data/val.jsonl" \
    --max_new_tokens=24 --show=0
  time $LMJAX train --config=configs/grpo.py --workdir="$RUNS/qa-grpo" --config.init_from="$sft" \
    --config.data.name=qa_shakespeare --config.sft.eval_questions=148 $QUIET
  final "$sft"; final "$RUNS/qa-grpo"
}

"$@"
