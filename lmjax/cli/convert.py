"""Convert weights between lmjax and Hugging Face (safetensors).

    # lmjax run -> a directory transformers loads: GPT2LMHeadModel for a GPT run, the
    # family's class (LlamaForCausalLM, Qwen3ForCausalLM, ...) for a decoder run,
    # BertForMaskedLM / BertForSequenceClassification for a BERT masked-LM / classifier run
    lmjax convert to_hf --workdir=runs/gpt --out=exports/gpt-hf

    # Hugging Face GPT-2 (hub id or local directory) -> an lmjax run at step 0, with the data
    # tokenized by GPT-2's own tokenizer, ready to fine-tune, generate from or serve
    lmjax convert from_hf --hf=gpt2 --workdir=runs/gpt2-shakespeare \\
        --config=configs/gpt.py:gpt2_124m --config.train.num_steps=2000
    lmjax train --config=runs/gpt2-shakespeare/finetune.py --workdir=runs/gpt2-shakespeare

    # Llama 3, Qwen 2/3, Mistral, Gemma 2/3 (a local directory) -> an lmjax run at step 0 with
    # the model's tokenizer, special tokens and chat template; fine-tune it with init_from
    lmjax convert from_hf --hf=hf/Qwen3-0.6B --workdir=runs/qwen3
    lmjax train --config=configs/llama.py:finetune --config.init_from=runs/qwen3 \\
        --workdir=runs/qwen3-shakespeare

    # Hugging Face BERT (BertForSequenceClassification, BertForMaskedLM or BertModel; a local
    # directory or a Hub id) -> an lmjax run at step 0 with its own WordPiece tokenizer, which
    # configs/classify.py fine-tunes with init_from (docs/finetune.md)
    lmjax convert from_hf --hf=hf/bert-base-uncased --workdir=runs/bert-base-uncased
    lmjax train --config=configs/classify.py:hf_sentiment \\
        --config.init_from=runs/bert-base-uncased --config.data.files=reviews.csv \\
        --workdir=runs/sentiment

to_hf reads the run directory only. from_hf takes the training settings from --config (data
source, optimizer, steps, ...; without --config: configs/gpt.py:gpt2_124m for GPT-2,
configs/classify.py for a BERT classifier, configs/bert.py for other BERTs) and the model
shape from the checkpoint; it needs the model's config.json and *.safetensors, and a tokenizer
beside them (tokenizer.json; for BERT also vocab.txt) or given by --tokenizer. For GPT-2 it
writes `finetune.py` (that config, complete) beside the step-0 checkpoint: training with it
resumes from the converted weights.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import config_arg, fail
from lmjax.config import load_config
from lmjax.convert.hf import from_hf, hf_kind, task_of, to_hf

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/gpt.py:gpt2_124m", "from_hf: the training config to fine-tune with.",
    lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "to_hf: the run to export; from_hf: the new "
                               "run's workdir.")
_OUT = flags.DEFINE_string("out", None, "to_hf: the output directory.")
_HF = flags.DEFINE_string("hf", None, "from_hf: a local Hugging Face model directory or a Hub "
                          "model id (gpt2, gpt2-medium, ...).")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "from_hf: a tokenizer.json, or a Hugging Face "
                                 "tokenizer directory, when the model directory has none.")
_BEST = flags.DEFINE_bool("best", False, "to_hf: export the run's best checkpoint.")

COMMANDS = ("to_hf", "from_hf")
# from_hf without --config: the training config for each kind of model.
DEFAULT_CONFIGS = {"text_classify": "configs/classify.py", "mlm": "configs/bert.py"}


def main(args: list[str]) -> None:
    if len(args) != 1 or args[0] not in COMMANDS:
        fail(f"give one command: {' or '.join(COMMANDS)} (see lmjax convert --help)")
    if args[0] == "to_hf":
        if not (_WORKDIR.value and _OUT.value):
            fail("to_hf needs --workdir (the run) and --out (the new directory).")
        source = to_hf(_WORKDIR.value, _OUT.value, _BEST.value)
        with open(os.path.join(_OUT.value, "config.json")) as f:
            cls = json.load(f)["architectures"][0]
        print(f"Wrote {_OUT.value} from {source}: transformers.{cls}.from_pretrained"
              f"({_OUT.value!r}) loads it.")
    else:
        if not (_HF.value and _WORKDIR.value):
            fail("from_hf needs --hf (a model directory or Hub id) and --workdir.")
        kind, cfg = hf_kind(_HF.value), _CONFIG.value  # reads config.json once
        task = task_of(kind)
        if task != "lm" and not config_arg(sys.argv):
            if any(a.startswith("--config.") for a in sys.argv):
                fail(f"{_HF.value} is a BERT: give --config={DEFAULT_CONFIGS[task]} (or another "
                     "config of that task) with the --config.* overrides.")
            cfg = load_config(DEFAULT_CONFIGS[task])
        result = from_hf(_HF.value, _WORKDIR.value, cfg, tokenizer=_TOKENIZER.value)
        if kind == "decoder":  # result: the fine-tuning command
            print(f"Wrote step 0 of {_WORKDIR.value} from {_HF.value}. Fine-tune with:\n"
                  f"  {result}\nor generate: lmjax generate --workdir={_WORKDIR.value} "
                  "--prompt=...")
            return
        if task != "lm":
            print(f"Wrote step 0 of {_WORKDIR.value} ({task}) from {_HF.value}. Fine-tune a "
                  f"classifier from it:\n  {result}\nor export it back: lmjax "
                  f"convert to_hf --workdir={_WORKDIR.value} --out=<dir>")
            return
        print(f"Wrote step 0 of {_WORKDIR.value} from {_HF.value}. Fine-tune with:\n"
              f"  lmjax train --config={result} --workdir={_WORKDIR.value}\n"
              f"or generate: lmjax generate --workdir={_WORKDIR.value} --prompt=...")
