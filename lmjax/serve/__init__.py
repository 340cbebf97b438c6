"""HTTP serving of lmjax models: `python -m lmjax.serve --workdir=runs/gpt`."""
