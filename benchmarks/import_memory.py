"""Peak memory of importing a Hugging Face checkpoint of a few GB (`lmjax convert from_hf`).

Importing streams the weights (lmjax/convert/decoders.py: each tensor read in chunks of rows
into its place, then placed on its devices), so the converting process should peak near one
copy of the model: the target is at most 1.5x the larger of the checkpoint's bytes and the
loaded parameters' bytes (a bf16 checkpoint loads into float32 parameters: twice its bytes).

    python benchmarks/import_memory.py                          # Qwen3-0.6B shape, float32
    python benchmarks/import_memory.py --dtype=bfloat16 --max_shard_size=500MB

The model is Qwen3-0.6B's shape (28 layers, width 1024, vocabulary 151,936; about 2.4 GB in
float32) with random weights, built offline by transformers and saved in shards
(model.safetensors.index.json) with a small byte-level tokenizer; it is cached in --hf_dir and
reused. The conversion runs as `python -m lmjax convert from_hf --hf=... --workdir=...` (its
default config: float32 parameters, scanned layers) in a child process whose peak resident
memory comes from os.wait4; so does that of a child that only imports the same modules (the
fixed cost of Python, JAX and lmjax). Memory does not depend on the machine's load; the wall
time does, and the load average is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repo

from lmjax.convert import decoders, safetensors_io  # noqa: E402
from lmjax.models.decoder import DecoderConfig  # noqa: E402

# Qwen3-0.6B's config.json (as tests/convert/test_decoders.py's HUB has it).
QWEN3_0_6B = dict(head_dim=128, hidden_size=1024, intermediate_size=3072,
                  max_position_embeddings=40960, max_window_layers=28, num_attention_heads=16,
                  num_hidden_layers=28, num_key_value_heads=8, rms_norm_eps=1e-06,
                  rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                  vocab_size=151936)
TEXT = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind",
        "to suffer the slings and arrows of outrageous fortune,", "ROMEO: But soft, what light"]


def build(directory: str, dtype: str, max_shard_size: str) -> None:
    """The random-weight model and a byte-level tokenizer with bos/eos, saved to `directory`
    (run in a child process, so that the parent stays small)."""
    import torch  # noqa: only the builder needs PyTorch
    import transformers as t
    from tokenizers import Tokenizer, decoders as tok_decoders, models, pre_tokenizers, trainers

    torch.manual_seed(0)
    model = t.Qwen3ForCausalLM(t.Qwen3Config(**QWEN3_0_6B)).to(getattr(torch, dtype)).eval()
    tmp = directory + ".partial"  # renamed into place: a half-built model is never reused
    model.save_pretrained(tmp, max_shard_size=max_shard_size)
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tok_decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos,
                              eos_token=eos).save_pretrained(tmp)
    os.rename(tmp, directory)


def peak_rss(command: list[str]) -> tuple[int, float, str]:
    """(peak resident bytes, wall seconds, output) of a child process (os.wait4's rusage:
    that child alone, whatever else this process ran)."""
    start = time.time()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1"))
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return usage.ru_maxrss * 1024, time.time() - start, output  # ru_maxrss is in KiB on Linux


def parameter_bytes(hf_dir: str) -> int:
    """The loaded parameters' bytes: the model from_hf builds (float32 parameters, its default
    config's)."""
    cfg = DecoderConfig(**decoders.read_settings(hf_dir), block_size=128, param_dtype="float32")
    shapes = decoders.param_shapes(cfg)
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the checkpoint's dtype")
    p.add_argument("--max_shard_size", default="1GB", help="save_pretrained's shard size")
    p.add_argument("--hf_dir", default="", help="where the model is built, or reused from "
                   "(default: $LMJAX_CACHE or ~/.cache/lmjax, bench/qwen3-0.6b-<dtype>)")
    p.add_argument("--workdir", default="", help="the converted run (default: a temporary "
                   "directory, removed)")
    args = p.parse_args()
    cache = os.environ.get("LMJAX_CACHE") or os.path.expanduser("~/.cache/lmjax")
    hf_dir = args.hf_dir or os.path.join(cache, "bench", f"qwen3-0.6b-{args.dtype}")
    if not os.path.exists(os.path.join(hf_dir, "config.json")):
        start = time.time()
        os.makedirs(os.path.dirname(os.path.abspath(hf_dir)), exist_ok=True)
        builder = multiprocessing.get_context("spawn").Process(
            target=build, args=(hf_dir, args.dtype, args.max_shard_size))
        builder.start()
        builder.join()
        if builder.exitcode:
            raise SystemExit(f"building {hf_dir} failed")
        print(f"built {hf_dir} in {time.time() - start:.0f} s")
    ckpt = safetensors_io.Checkpoint(hf_dir)
    with open(os.path.join(hf_dir, "config.json")) as f:
        stored = json.load(f).get("dtype") or "?"
    shards = len({path for path, *_ in ckpt.entries.values()})
    params = parameter_bytes(hf_dir)

    base, _, _ = peak_rss([sys.executable, "-c", "import jax, lmjax.cli.convert, "
                           "lmjax.convert.hf; jax.numpy.zeros(1).block_until_ready()"])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or os.path.join(tmp, "run")
        peak, wall, _ = peak_rss([sys.executable, "-m", "lmjax", "convert", "from_hf",
                                  f"--hf={hf_dir}", f"--workdir={workdir}"])
    larger = max(ckpt.nbytes, params)
    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    print(f"checkpoint: {hf_dir} ({stored}, {len(ckpt.entries)} tensors in {shards} files): "
          f"{gb(ckpt.nbytes)}")
    print(f"parameters (float32): {gb(params)}")
    print(f"peak RSS of convert from_hf: {gb(peak)} = {peak / larger:.2f}x the larger "
          f"(target <= 1.5x); of importing its modules alone: {gb(base)}")
    print(f"wall time: {wall:.1f} s (load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
