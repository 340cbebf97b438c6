"""BERT masked-language-model pretraining (then fine-tune with configs/classify.py).

    lmjax train --config=configs/bert.py                          # the CPU default, minutes
    lmjax train --config=configs/bert.py:tiny                     # seconds: smoke test
    lmjax train --config=configs/bert.py:bert_base                # BERT-base shape, accelerators
    lmjax train --config=configs/bert.py:hf_continue --config.init_from=runs/bert-base-uncased \
        --config.data.name=files --config.data.files='domain/*.txt'   # domain-adaptive pretraining

Shakespeare by default (held out: the works of lmjax/data/shakespeare.VAL_WORKS), a cased
WordPiece vocabulary trained on the training works, 15% of tokens selected per passage (80%
[MASK], 10% random, 10% kept). Reports MLM loss, masked-token accuracy and perplexity on the
held-out works. Every field can be overridden as --config.<section>.<field>=value.
"""

import ml_collections

from lmjax.config import base_config, bert_model, text_data
from lmjax.tasks import with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "mlm"

    c.data.update(text_data(tokenizer="wordpiece", vocab_size=4096))  # lmjax/config.py
    c.data.mask_rate = 0.15        # share of each passage's ordinary tokens to predict

    c.model = bert_model()         # lmjax/config.py:bert_model, shared with classify.py

    c.train.num_steps = 800
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.eval_examples = 256     # validation passages per periodic evaluation
    c.train.final_eval_examples = 0 # 0: every held-out passage

    # Muon (orthogonalised momentum) for the weight matrices, AdamW for embeddings, norms and
    # biases: a lower held-out MLM loss than AdamW alone (docs/bert.md#results).
    c.optim.name = "muon"
    c.optim.learning_rate = 3e-3       # AdamW part
    c.optim.muon_learning_rate = 0.02  # weight matrices
    c.optim.momentum = 0.95
    c.optim.warmup_steps = 80
    c.optim.b2 = 0.98
    c.optim.weight_decay = 0.01    # BERT's
    c.optim.end_lr_ratio = 0.0

    c.checkpoint.every = 400

    c.fill_mask = ml_collections.ConfigDict()  # printed at the end of a run
    c.fill_mask.num_passages = 2   # held-out passages shown with their masked words guessed
    c.fill_mask.max_tokens = 60    # tokens shown per passage

    if preset == "cpu":
        pass
    elif preset == "tiny":  # seconds, for tests and smoke runs
        c.data.vocab_size = 512
        c.model.update(num_layers=2, num_heads=2, d_model=32, block_size=32)
        c.train.update(num_steps=20, batch_size=8, log_every=5, eval_every=10, eval_examples=16,
                       final_eval_examples=64)
        c.optim.warmup_steps = 5
        c.checkpoint.every = 10
        c.fill_mask.num_passages = 1
        c.log.progress_bar = False
    elif preset == "bert_base":
        c.data.vocab_size = 30522
        c.model.update(num_layers=12, num_heads=12, d_model=768, block_size=512,
                       dtype="bfloat16")
        c.train.update(num_steps=100000, batch_size=256, eval_every=5000)
        c.optim.update(name="adamw", learning_rate=1e-4, warmup_steps=10000, b2=0.999)
        c.checkpoint.every = 5000
    elif preset == "hf_continue":  # more masked-LM training of a converted BERT (init_from)
        # 0: the init_from run's shape; its weights, tokenizer and vocabulary order are kept.
        c.model.update(num_layers=0, num_heads=0, d_model=0, mlp_ratio=0, block_size=128)
        c.train.update(num_steps=1000, batch_size=32, eval_every=250)
        c.optim.update(name="adamw", learning_rate=5e-5, warmup_steps=100, b2=0.999)
    else:
        raise ValueError(f"unknown preset {preset!r}: use cpu, tiny, bert_base or hf_continue")
    return c
