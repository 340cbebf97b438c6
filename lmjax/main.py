"""`python -m lmjax.main`: train, evaluate, checkpoint and sample a run.

The command is lmjax/cli/train.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("train")
