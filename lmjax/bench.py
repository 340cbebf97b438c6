"""`python -m lmjax.bench`: time a config's real train step.

The command is lmjax/cli/bench.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("bench")
