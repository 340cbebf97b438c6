"""Weight conversion between lmjax and Hugging Face GPT-2: `python -m lmjax.convert`."""
