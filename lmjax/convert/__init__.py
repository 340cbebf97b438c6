"""Weight conversion between lmjax and Hugging Face GPT-2: `lmjax convert`."""
