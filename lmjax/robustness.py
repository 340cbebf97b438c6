"""`python -m lmjax.robustness`: accuracy under FGSM/PGD attacks of a classifier run.

The command is lmjax/cli/robustness.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("robustness")
