"""`python -m lmjax.sklearn_baseline`: scikit-learn's linear models on a tabular config's split.

The command is lmjax/cli/sklearn_baseline.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("sklearn_baseline")
