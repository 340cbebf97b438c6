"""`python -m lmjax.sweep`: hyperparameter search on Optuna.

The command is lmjax/cli/sweep.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("sweep")
