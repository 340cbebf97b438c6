"""Group relative policy optimisation (GRPO) of a GPT run with verifiable rewards.

    lmjax addition_data --out=runs/add                           # two-digit addition
    lmjax train --config=configs/grpo.py --config.init_from=runs/add-sft \\
        --config.data.train_file=runs/add/train.jsonl --config.data.val_file=runs/add/val.jsonl \\
        --config.sft.max_answer_tokens=6 --workdir=runs/add-grpo
    lmjax train --config=configs/grpo.py --config.init_from=runs/qa-sft \\
        --config.data.name=qa_shakespeare --workdir=runs/qa-grpo   # exact match on the QA set
    lmjax train --config=configs/grpo.py:tiny ...       # seconds: smoke test

Prompts are JSONL records with a string 'prompt' (and 'response' / 'answers' for the built-in
rewards), put through sft.template; completions stop at sft.stop and at most
sft.max_answer_tokens. Everything but the data and the RL section is configs/sft.py's: the model
must have the init_from run's shape, whose tokenizer is used. docs/posttraining.md has the
walkthrough and figures.
"""

import os

import ml_collections

from lmjax.config import load_config
from lmjax.tasks import with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    sft = os.path.join(os.path.dirname(__file__), "sft.py")
    c = load_config(f"{sft}:{preset}")  # SFT's cpu or tiny preset
    c.task = "grpo"
    c.data.name = "jsonl"          # {'prompt', 'response' or 'answers', ...} per line

    c.rl = ml_collections.ConfigDict()
    c.rl.num_generations = 8       # G: samples per prompt (train.batch_size is G x prompts)
    c.rl.temperature = 1.0         # rollout sampling (evaluation decodes greedily)
    c.rl.reward = "exact_match"    # comma-separated, summed: exact_match, numeric, format,
    #                                or 'module:function' (lmjax/eval/rewards.py)
    c.rl.format_pattern = ""       # with reward 'format': a regex the completion must match
    c.rl.beta = 0.04               # KL weight to the reference (0: no reference kept)
    c.rl.epsilon = 0.2             # clip range of the policy ratio
    c.rl.mu = 1                    # updates per rollout batch (> 1: PPO-style inner steps)
    c.rl.scale_rewards = True      # divide advantages by the group's std (False: Dr. GRPO)
    c.rl.loss_norm = "sequence"    # 'sequence' (GRPO) | 'token' (DAPO) | 'constant' (Dr. GRPO)
    c.rl.prompt_length = 0         # prompt tokens per row (0: the longest prompt, resolved)

    c.train.update(num_steps=200, batch_size=64, log_every=10, eval_every=50,
                   eval_examples=256)
    c.optim.update(learning_rate=1e-4, warmup_steps=10)
    c.checkpoint.every = 50
    if preset == "tiny":
        c.rl.num_generations = 4
        c.train.update(num_steps=6, batch_size=8, log_every=2, eval_every=3, eval_examples=8)
        c.optim.warmup_steps = 2
        c.checkpoint.every = 3
    return c
