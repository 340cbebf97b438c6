"""Convert weights between lmjax and Hugging Face (safetensors).

    # lmjax run -> a directory transformers loads: GPT2LMHeadModel for a GPT run,
    # BertForMaskedLM / BertForSequenceClassification for a BERT masked-LM / classifier run
    python -m lmjax.convert to_hf --workdir=runs/gpt --out=exports/gpt-hf

    # Hugging Face GPT-2 (hub id or local directory) -> an lmjax run at step 0, with the data
    # tokenized by GPT-2's own tokenizer, ready to fine-tune, generate from or serve
    python -m lmjax.convert from_hf --hf=gpt2 --workdir=runs/gpt2-shakespeare \\
        --config=configs/gpt.py:gpt2_124m --config.train.num_steps=2000
    python -m lmjax.main --config=runs/gpt2-shakespeare/finetune.py --workdir=runs/gpt2-shakespeare

to_hf reads the run directory only. from_hf takes the training settings from --config (data
source, optimizer, steps, ...) and the model shape from the checkpoint; it needs the model's
config.json and *.safetensors, and a tokenizer.json beside them or given by --tokenizer. It
writes `finetune.py` (that config, complete) beside the step-0 checkpoint: training with it
resumes from the converted weights.
"""

from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import fail
from lmjax.convert.hf import from_hf, to_hf

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/gpt.py:gpt2_124m", "from_hf: the training config to fine-tune with.",
    lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "to_hf: the run to export; from_hf: the new "
                               "run's workdir.")
_OUT = flags.DEFINE_string("out", None, "to_hf: the output directory.")
_HF = flags.DEFINE_string("hf", None, "from_hf: a local Hugging Face model directory or a Hub "
                          "model id (gpt2, gpt2-medium, ...).")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "from_hf: a tokenizer.json (or a directory "
                                 "holding one) when the model directory has none.")
_BEST = flags.DEFINE_bool("best", False, "to_hf: export the run's best checkpoint.")

COMMANDS = ("to_hf", "from_hf")


def main(args: list[str]) -> None:
    if len(args) != 1 or args[0] not in COMMANDS:
        fail(f"give one command: {' or '.join(COMMANDS)} (see python -m lmjax.convert --help)")
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
        path = from_hf(_HF.value, _WORKDIR.value, _CONFIG.value, tokenizer=_TOKENIZER.value)
        print(f"Wrote step 0 of {_WORKDIR.value} from {_HF.value}. Fine-tune with:\n"
              f"  python -m lmjax.main --config={path} --workdir={_WORKDIR.value}\n"
              f"or generate: python -m lmjax.generate --workdir={_WORKDIR.value} --prompt=...")
