"""`python -m lmjax.bench_generate`: time generation and serving.

The command is lmjax/cli/bench_generate.py; this file only hands over to it.
"""

if __name__ == "__main__":
    from lmjax.cli import launch

    launch("bench_generate")
