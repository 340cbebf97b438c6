"""HTTP serving of lmjax models: `lmjax serve --workdir=runs/gpt`."""
