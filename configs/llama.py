"""Language models of today's decoder families (Llama 3, Qwen 2/3, Mistral, Gemma 2/3): one
block, lmjax/models/decoder.py; docs/models.md.

    python -m lmjax.main --config=configs/llama.py:tiny          # seconds: smoke test
    python -m lmjax.main --config=configs/llama.py          # the CPU default: Shakespeare, chars
    python -m lmjax.main --config=configs/llama.py:qwen3_0_6b    # real sizes, for accelerators
    python -m lmjax.main --config=configs/llama.py --config.model.name=gemma3 \\
        --config.model.sliding_window=64                         # another family's block

    # a Hugging Face checkpoint: convert it, then fine-tune from it (init_from)
    lmjax convert from_hf --hf=hf/Qwen3-0.6B --workdir=runs/qwen3
    python -m lmjax.main --config=configs/llama.py:finetune --config.init_from=runs/qwen3 \\
        --workdir=runs/qwen3-shakespeare

model.name picks the family; the fields a section leaves out take the family's own
(lmjax/models/decoder.py: FAMILY_FEATURES, e.g. Gemma's norms and GeGLU). Every field can be
overridden as --config.<section>.<field>=value; a training switch adds its section after the
preset with '+' (lmjax/tasks/__init__.py).
"""

import os

import ml_collections

from lmjax.config import load_config
from lmjax.tasks import with_switches

# Released shapes: (family, layers, heads, key/value heads, head_dim, width, MLP width, vocab,
# tied embeddings, rope theta, extra model fields). Batch, remat and context are for one 80 GB
# GPU in bf16; the vocabulary is the release's (a tokenizer trained with it, or theirs).
SIZES = {
    "llama3_1b": ("llama", 16, 32, 8, 64, 2048, 8192, 128256, True, 500000.0, dict(
        rope_type="llama3", rope_factor=32.0, rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0, rope_original_context=8192, norm_eps=1e-5)),
    "qwen3_0_6b": ("qwen3", 28, 16, 8, 128, 1024, 3072, 151936, True, 1e6, {}),
    "qwen2_5_0_5b": ("qwen2", 24, 14, 2, 64, 896, 4864, 151936, True, 1e6, {}),
    "gemma3_1b": ("gemma3", 26, 4, 1, 256, 1152, 6912, 262144, True, 1e6, dict(
        rope_local_theta=10000.0, sliding_window=512, layer_pattern="LLLLLG")),
}


@with_switches  # 'tiny+lora': the tiny preset with the lora section
def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    # The data, training budget, optimizer (Muon) and samples of the GPT default
    # (configs/gpt.py, its cpu or tiny preset): only the model differs.
    gpt = os.path.join(os.path.dirname(__file__), "gpt.py")
    c = load_config(f"{gpt}:{'tiny' if preset == 'tiny' else 'cpu'}")

    # The default's model section (configs/gpt.py: decoder_model): the block, at 0.82M.
    c.model = load_config(f"{gpt}:cpu").model
    if preset == "cpu":  # configs/gpt.py's default, as it is
        pass
    elif preset == "tiny":  # seconds, for tests and smoke runs (gpt.py:tiny's budget)
        c.model.update(num_layers=2, num_heads=2, num_kv_heads=1, d_model=32, mlp_dim=96,
                       block_size=32)
    elif preset in SIZES:
        family, layers, heads, kv, head_dim, width, mlp, vocab, tied, theta, extra = SIZES[preset]
        c.data.update(tokenizer="bpe", vocab_size=vocab)
        c.model.update(name=family, num_layers=layers, num_heads=heads, num_kv_heads=kv,
                       head_dim=head_dim, d_model=width, mlp_dim=mlp, tie_embeddings=tied,
                       rope_theta=theta, block_size=2048, dtype="bfloat16", scan_layers=True,
                       remat="dots")
        with c.model.unlocked():
            c.model.update(extra)
        c.train.update(num_steps=20000, batch_size=16, eval_every=1000, loss_chunk=256)
        c.optim.update(name="adamw", learning_rate=3e-4, warmup_steps=700, b2=0.95,
                       end_lr_ratio=0.1)
        c.checkpoint.every = 2000
    elif preset == "finetune":  # continue a converted checkpoint (init_from) on the data here
        # The architecture, weights and tokenizer are the init_from run's: this section says
        # only how to compute (lmjax/tasks/lm.py: model_section).
        c.model = ml_collections.ConfigDict(dict(
            name="init_from", block_size=256, dtype="float32", param_dtype="float32",
            attention="auto", scan_layers=False, remat="none", dropout=0.0))
        c.train.update(num_steps=500, batch_size=8, eval_every=100, eval_examples=64)
        c.optim.update(name="adamw", learning_rate=3e-5, warmup_steps=50, weight_decay=0.0)
        c.checkpoint.every = 100
        c.sample.max_new_tokens = 100
    else:
        raise ValueError(f"unknown preset {preset!r}: use cpu, tiny, finetune, "
                         f"{', '.join(SIZES)}")
    return c
