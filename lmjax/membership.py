"""`python -m lmjax.membership`: a loss-threshold membership-inference attack on a run.

The command is lmjax/cli/membership.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("membership")
