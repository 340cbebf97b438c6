"""TPE search around the CPU GPT default with GPT-2's block (configs/gpt.py:cpu_gpt2, the default
until 2026-12-06) at 400 steps instead of 2,450.

    lmjax sweep --config=configs/gpt.py:cpu_gpt2 --sweep=configs/sweeps/gpt_default.py

16 trials on a 2-core CPU. Compare with the default at the same
budget: lmjax train --config=configs/gpt.py:cpu_gpt2 --config.train.num_steps=400
--config.train.eval_every=100 --config.train.final_eval_examples=256 --config.sample.num_samples=0
Results: docs/sweeps.md.
"""


def get_sweep():
    return dict(
        algorithm="tpe",
        metric="loss",
        direction="minimize",
        num_trials=16,
        num_steps=400,
        startup_trials=5,          # random trials before TPE models the results
        pruner="median",
        pruner_startup_trials=4,
        pruner_warmup_steps=200,   # warmup makes early losses misleading: judge from step 200
        seed=0,
        overrides={"train.eval_every": 100, "train.final_eval_examples": 256,
                   "sample.num_samples": 0, "checkpoint.every": 400, "checkpoint.keep": 1,
                   "log.progress_bar": False},
        space={
            "optim.learning_rate": ("log_uniform", 1e-3, 3e-2),       # default 4e-3
            "optim.muon_learning_rate": ("log_uniform", 5e-3, 8e-2),  # default 0.02
            "optim.warmup_steps": ("int", 0, 200, 10),                # default 200
            "optim.weight_decay": ("uniform", 0.0, 0.3),              # default 0.1
            # Categorical, so that "no dropout" is a choice of its own.
            "model.dropout": ("categorical", [0.0, 0.05, 0.1, 0.2]),  # default 0.0
        },
    )
