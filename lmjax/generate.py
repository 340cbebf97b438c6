"""`python -m lmjax.generate`: continue prompts with a trained GPT.

The command is lmjax/cli/generate.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("generate")
