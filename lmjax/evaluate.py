"""`python -m lmjax.evaluate`: evaluate a saved run over a whole split.

The command is lmjax/cli/evaluate.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("evaluate")
