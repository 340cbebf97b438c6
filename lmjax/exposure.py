"""`python -m lmjax.exposure`: the Secret Sharer exposure of canaries in a language-model run.

The command is lmjax/cli/exposure.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("exposure")
