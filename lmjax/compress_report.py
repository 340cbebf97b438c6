"""`python -m lmjax.compress_report`: a table of a run and its compressed variants.

The command is lmjax/cli/compress_report.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("compress_report")
