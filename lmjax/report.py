"""`python -m lmjax.report`: compare runs' curves and summaries.

The command is lmjax/cli/report.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("report")
