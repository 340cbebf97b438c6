"""Supervised fine-tuning (SFT) of a GPT on prompt/response pairs: the loss on answers only.

    lmjax qa_data --out=runs/qa_data                       # the closed-book QA set
    lmjax train --config=configs/sft.py --config.init_from=runs/qa-base --workdir=runs/qa-sft
    lmjax train --config=configs/sft.py --config.init_from=runs/qa-base \\
        --config.data.name=jsonl --config.data.train_file=my.jsonl --workdir=runs/my-sft
    lmjax train --config=configs/sft.py:tiny ...           # seconds: smoke test

The model's shape must be the pretrained run's (init_from), whose tokenizer.json is used. The
walkthrough with figures is docs/finetune.md. Every field can be overridden as --config.<a>.<b>=v.
"""

import ml_collections

from lmjax.config import base_config
from lmjax.tasks import add_switches, with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "sft"

    c.data.name = "qa_shakespeare"  # 'qa_shakespeare' | 'jsonl' | 'tfds:squad'
    c.data.train_file = ""         # with jsonl: {'prompt','response'} or {'messages'} per line
    c.data.val_file = ""           # with jsonl: '' holds out data.val_fraction of train_file
    c.data.val_fraction = 0.05
    c.data.qa_seed = 0             # with qa_shakespeare: the seed of its question split
    c.data.max_examples = 0        # with tfds: examples read per split (0: all)
    c.data.val_split = ""          # with tfds: '' is 'validation'
    c.data.tokenizer_file = ""     # '': the init_from run's tokenizer.json

    c.sft = ml_collections.ConfigDict()
    c.sft.template = "Question: {prompt}\nAnswer: {response}"  # must end with {response}
    c.sft.end = "\n\n"             # appended to every response (learned): the end marker
    c.sft.stop = ("\n\n",)         # generation stops at these (answers, /v1/qa, generate)
    c.sft.response_only = True     # loss on response tokens only; False: whole sequences
    c.sft.packing = True           # several examples per row, segment ids keep them apart
    c.sft.pack_length = 128        # packed row length (0: model.block_size; at least the
    #                                longest example, at most the context): 128 is the
    #                                fastest on the QA set (docs/finetune.md#results)
    c.sft.eval_questions = 200     # validation questions answered (EM/F1) at the end; 0: none
    c.sft.max_answer_tokens = 24   # greedy tokens per answer

    add_switches(c, "lora")        # rank 0: off; lmjax/tasks/adapters.py
    c.lora.targets = "out,fc,proj"   # among out (attention output), fc, proj (MLP), qkv

    # The pretrained model's shape (configs/gpt.py:cpu_gpt2 with block_size 256; docs/finetune.md).
    c.model.vocab_size = 0         # 0: taken from the tokenizer
    c.model.block_size = 256
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.d_model = 128
    c.model.mlp_ratio = 4
    c.model.dropout = 0.0
    c.model.use_bias = True
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.attention = "auto"
    c.model.scan_layers = False
    c.model.remat = "none"

    c.train.num_steps = 600
    c.train.batch_size = 16        # rows (packed rows hold several examples)
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.eval_examples = 256

    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.checkpoint.every = 200

    if preset == "cpu":
        pass
    elif preset == "tiny":  # seconds, for tests and smoke runs
        c.model.update(num_layers=2, num_heads=2, d_model=32, block_size=64)
        c.train.update(num_steps=6, batch_size=4, log_every=2, eval_every=3, eval_examples=8,
                       final_eval_examples=8)
        c.optim.warmup_steps = 2
        c.checkpoint.every = 3
        c.sft.update(eval_questions=4, max_answer_tokens=4)
        c.log.progress_bar = False
    else:
        raise ValueError(f"unknown preset {preset!r}: use cpu or tiny")
    return c
