"""Learning rate and warmup of the CPU GPT, 12 TPE trials of 600 steps, median pruning.

    lmjax sweep --config=configs/gpt.py --sweep=configs/sweeps/gpt_lr.py
"""


def get_sweep():
    return dict(
        algorithm="tpe",
        metric="loss",
        direction="minimize",
        num_trials=12,
        num_steps=600,
        startup_trials=5,
        pruner="median",
        pruner_startup_trials=3,
        overrides={"train.eval_every": 150, "train.final_eval_examples": 256,
                   "sample.num_samples": 0, "checkpoint.keep": 1},
        space={
            "optim.learning_rate": ("log_uniform", 1e-3, 2e-2),
            "optim.muon_learning_rate": ("log_uniform", 5e-3, 5e-2),
            "optim.warmup_steps": ("int", 0, 200, 25),
        },
    )
