"""A PyTorch GPT of nanoGPT's design, timed the way `lmjax bench` times ours.

The reference for the side-by-side in docs/performance.md: the same architecture as
lmjax/models/gpt.py (pre-LayerNorm blocks with biases, fused causal attention through
`F.scaled_dot_product_attention`, tanh GELU, tied embeddings), AdamW, on random tokens
(the step's speed does not depend on the text). Median of the timed steps, warm-up excluded.

    pip install torch   # the CPU wheel is enough here
    python benchmarks/torch_gpt.py --layers=4 --heads=4 --width=128 --block=64 --batch=12
    python benchmarks/torch_gpt.py ... --compile     # torch.compile (needs a C++ compiler)
    python benchmarks/torch_gpt.py --layers=12 --heads=12 --width=768 --block=1024 --batch=32 \
        --vocab=50304 --dtype=bfloat16 --compile      # GPT-2 124M on a GPU
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab: int, block: int, layers: int, heads: int, width: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "down.weight")) \
                    else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.tok.weight.T  # tied output embedding
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute dtype (autocast); parameters stay float32")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="device peak for MFU (989 for an H100's dense bf16); 0: no MFU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = GPT(a.vocab, a.block, a.layers, a.heads, a.width).to(a.device)
    autocast = torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16,
                              enabled=a.dtype == "bfloat16")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

    def step(x, y):
        with autocast:
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    if a.compile:
        model = torch.compile(model)
    data = torch.randint(0, a.vocab, (2, a.batch, a.block + 1), device=a.device)
    t = time.perf_counter()
    step(data[0, :, :-1], data[0, :, 1:]).item()
    first_s = time.perf_counter() - t
    times = []
    for i in range(a.warmup + a.steps):
        x, y = data[i % 2, :, :-1], data[i % 2, :, 1:]
        t = time.perf_counter()
        step(x, y).item()  # .item() waits for the step
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    n = sum(q.numel() for q in model.parameters())
    print(f"torch {torch.__version__} on {a.device} ({torch.get_num_threads()} CPU threads), "
          f"{a.dtype}, {'compiled' if a.compile else 'eager'}, {n / 1e6:.2f}M parameters")
    print(f"first step (with compile)  {first_s:.1f} s")
    print(f"step time (median)         {median * 1e3:.1f} ms")
    tokens_s = a.batch * a.block / median
    print(f"tokens/s                   {tokens_s:,.0f}")
    if a.peak_tflops:  # lmjax bench's formula: 6N (N without position embeddings) + 12 L d T
        flops = 6 * (n - a.block * a.width) + 12 * a.layers * a.width * a.block
        print(f"MFU                        {100 * flops * tokens_s / (a.peak_tflops * 1e12):.1f}%")


if __name__ == "__main__":
    main()
