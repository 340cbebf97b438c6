"""`python -m lmjax.serve`: serve a run over HTTP.

The command is lmjax/cli/serve.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("serve")
