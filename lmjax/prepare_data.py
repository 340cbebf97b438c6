"""`python -m lmjax.prepare_data`: prepare a large corpus into token shards.

The command is lmjax/cli/prepare_data.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("prepare_data")
