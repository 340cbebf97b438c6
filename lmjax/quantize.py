"""`python -m lmjax.quantize`: int8 weight quantization of a run.

The command is lmjax/cli/quantize.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("quantize")
