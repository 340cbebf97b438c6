"""Sequence classification with a BERT encoder: fine-tuning a configs/bert.py run, or from scratch.

    lmjax train --config=configs/bert.py --workdir=runs/bert                   # pretrain first
    lmjax train --config=configs/classify.py --config.init_from=runs/bert
    lmjax train --config=configs/classify.py                                   # from scratch
    lmjax train --config=configs/classify.py --config.init_from=runs/bert \\
        --config.lora.rank=8 --config.lora.targets=query,value                 # LoRA
    lmjax train --config=configs/classify.py --config.data.num_folds=4           # 4-fold CV
    lmjax train --config=configs/classify.py --config.data.name=tfds:imdb_reviews \\
        --config.init_from=runs/bert                                           # sentiment (online)
    # a pretrained Hugging Face BERT (docs/finetune.md): convert it, then fine-tune on a table
    lmjax convert from_hf --hf=hf/bert-base-uncased --workdir=runs/bert-base-uncased
    lmjax train --config=configs/classify.py:hf_sentiment \\
        --config.init_from=runs/bert-base-uncased --config.data.files=reviews.csv

Default task (offline): which kind of work — comedy, history, tragedy or poem — a Shakespeare
passage comes from, split by work (lmjax/data/genres.py). Reports accuracy, precision, recall
and F1 (per class, macro, micro), one-vs-rest ROC-AUC, log loss and the confusion matrix.
"""

import ml_collections

from lmjax.config import base_config, bert_model
from lmjax.tasks import add_switches, with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "text_classify"
    c.init_from = ""               # a configs/bert.py workdir, or a BERT converted by
    #                                lmjax convert from_hf: its encoder and tokenizer

    c.data.name = "genres"         # 'genres' (offline) | 'files' (CSV/TSV/JSONL) | 'tfds:<name>'
    c.data.files = ""              # with files: the training table(s), paths or globs
    c.data.val_files = ""          # with files: held-out table(s); '' holds out val_fraction
    c.data.val_fraction = 0.1      # with files and no val_files: share of rows held out
    c.data.class_names = ""        # with files: 'neg,pos' fixes the classes' order ('': sorted)
    c.data.tokenizer_file = ""     # a fixed tokenizer (Hugging Face directory or tokenizer.json)
    #                                when there is no init_from; '' trains a WordPiece
    c.data.text_key = "text"       # the text column (files) or feature (tfds)
    c.data.label_key = "label"     # the label column (files) or integer label feature (tfds)
    c.data.max_examples = 0        # with tfds: at most this many examples per split (0: all)
    c.data.val_split = ""          # with tfds: the held-out split ('': test)
    c.data.vocab_size = 4096       # WordPiece vocabulary when not taken from init_from

    c.model = bert_model()         # the encoder of configs/bert.py (lmjax/config.py)

    add_switches(c, "lora")        # rank 0: off; lmjax/tasks/adapters.py
    c.lora.targets = "query,value"   # among query,key,value,out,fc,proj

    c.train.num_steps = 300
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.eval_examples = 0       # 0: every validation passage (1,289 by default)
    c.train.final_eval_examples = 0
    c.train.class_weights = "balanced"  # '' | 'balanced' | 'w0,w1,...' (poems are rare)
    c.train.early_stopping_metric = "f1_macro"
    c.train.early_stopping_mode = "max"
    c.train.patience = 0           # evaluations without improvement before stopping (0: never)

    c.optim.name = "adamw"
    c.optim.learning_rate = 3e-4
    c.optim.warmup_steps = 30
    c.optim.b2 = 0.98
    c.optim.weight_decay = 0.01
    c.optim.end_lr_ratio = 0.0

    c.checkpoint.every = 300

    if preset == "cpu":
        pass
    elif preset == "tiny":  # seconds, for tests and smoke runs; matches configs/bert.py:tiny
        c.data.vocab_size = 512    # configs/bert.py:tiny's
        c.model.update(num_layers=2, num_heads=2, d_model=32, block_size=32)
        c.train.update(num_steps=20, batch_size=8, log_every=5, eval_every=10, eval_examples=64,
                       final_eval_examples=128)
        c.optim.warmup_steps = 5
        c.checkpoint.every = 10
        c.log.progress_bar = False
    elif preset == "hf_sentiment":  # a converted Hugging Face BERT on a local review table
        c.data.update(name="files", class_names="negative,positive")
        # 0: the init_from run's shape (e.g. bert-base: 12 layers, 768 wide); 128 positions
        # of its 512 keep CPU steps short (raise it for long reviews on an accelerator).
        c.model.update(num_layers=0, num_heads=0, d_model=0, mlp_ratio=0, block_size=128)
        c.train.update(num_steps=300, batch_size=16, eval_every=100, class_weights="")
        c.train.early_stopping_metric = "accuracy"
        c.optim.update(learning_rate=3e-5, warmup_steps=30, b2=0.999)  # BERT's fine-tuning
    else:
        raise ValueError(f"unknown preset {preset!r}: use cpu, tiny or hf_sentiment")
    return c
