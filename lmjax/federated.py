"""`python -m lmjax.federated`: federated averaging over simulated clients.

The command is lmjax/cli/federated.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("federated")
