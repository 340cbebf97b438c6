"""`python -m lmjax.explain`: attributions and attention maps for a run's predictions.

The command is lmjax/cli/explain.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("explain")
