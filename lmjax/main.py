"""`python -m lmjax.main`: the same as `lmjax train` (the spelling the design card and the
README's first command use).

The command is lmjax/cli/train.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("train")
