"""Group relative policy optimisation (GRPO) of a GPT run with verifiable rewards.

    lmjax addition_data --out=runs/add                           # two-digit addition
    lmjax train --config=configs/grpo.py --config.init_from=runs/add-sft \\
        --config.data.train_file=runs/add/train.jsonl --config.data.val_file=runs/add/val.jsonl \\
        --config.sft.max_answer_tokens=6 --workdir=runs/add-grpo
    lmjax train --config=configs/grpo.py --config.init_from=runs/qa-sft \\
        --config.data.name=qa_shakespeare --workdir=runs/qa-grpo   # exact match on the QA set
    lmjax train --config=configs/grpo.py:tiny ...       # seconds: smoke test
    # a released decoder's shape (configs/llama.py's presets) with random weights, on addition
    # problems whose tokenizer is padded to its vocabulary: rollout and update throughput
    lmjax addition_data --out=runs/add-qwen3 --vocab_size=151936
    python benchmarks/rollout_speed.py --config=configs/grpo.py:qwen3_0_6b --step \\
        --config.data.train_file=runs/add-qwen3/train.jsonl \\
        --config.data.val_file=runs/add-qwen3/val.jsonl \\
        --config.data.tokenizer_file=runs/add-qwen3/tokenizer.json

Prompts are JSONL records with a string 'prompt' (and 'response' / 'answers' for the built-in
rewards), put through sft.template; completions stop at sft.stop and at most
sft.max_answer_tokens. Everything but the data and the RL section is configs/sft.py's (a
released shape's preset: with configs/llama.py's model): the model must have the init_from
run's shape, whose tokenizer is used. docs/posttraining.md has the walkthrough and figures.
"""

import os
import runpy

import ml_collections

from lmjax.config import load_config
from lmjax.tasks import with_switches


@with_switches  # '<preset>+<switch>': a preset with a training switch's section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    here = os.path.dirname(__file__)
    sizes = runpy.run_path(os.path.join(here, "llama.py"))["SIZES"]
    if preset not in ("cpu", "tiny", *sizes):
        raise ValueError(f"unknown preset {preset!r}: use cpu, tiny, {', '.join(sizes)}")
    # SFT's cpu or tiny preset (a released shape: cpu's, with that model)
    c = load_config(f"{os.path.join(here, 'sft.py')}:{'tiny' if preset == 'tiny' else 'cpu'}")
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
    if preset in sizes:  # configs/llama.py's model of that release, bf16, random weights
        llama = load_config(f"{os.path.join(here, 'llama.py')}:{preset}")
        c.model = llama.model
        c.model.update(vocab_size=llama.data.vocab_size, block_size=512)
        c.rl.prompt_length = 32     # fixed shapes: the step's and the rollouts' benchmarks agree
        c.sft.max_answer_tokens = 64
        c.train.update(batch_size=64, eval_examples=64)  # 8 prompts x 8 samples per step
        c.optim.update(learning_rate=1e-6, warmup_steps=10)
    if preset == "tiny":
        c.rl.num_generations = 4
        c.train.update(num_steps=6, batch_size=8, log_every=2, eval_every=3, eval_examples=8)
        c.optim.warmup_steps = 2
        c.checkpoint.every = 3
    return c
