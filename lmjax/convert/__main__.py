"""`python -m lmjax.convert`: convert weights to and from Hugging Face.

The command is lmjax/cli/convert.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("convert")
