"""`python -m lmjax.scrub`: mask personal data (PII) in text files, with a report.

The command is lmjax/cli/scrub.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("scrub")
