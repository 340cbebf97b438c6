"""What the checkpoint digest costs: one save and one restore of a preset's full training state,
timed without a digest and with each hash lmjax can record, interleaved; and the hashing alone
(the measurement behind docs/performance.md's entry).

    python tests/faults/measure_digest.py [configs/gpt.py:gpt2_124m] [repeats]

Not a test (pytest does not collect it): it builds the preset's real state (124M: parameters
and AdamW moments, 1.5 GB) on this machine's CPU devices and saves it under a temporary folder.
"""

import json
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

from lmjax import checkpoint as ckptlib
from lmjax.config import load_config
from lmjax.train.setup import setup


def main(spec: str = "configs/gpt.py:gpt2_124m", repeats: int = 3) -> dict:
    cfg = load_config(spec)
    s = setup(cfg, log=lambda line: None)
    state = s.new_state()
    jax.block_until_ready(state)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    hashing = ckptlib.array_digests
    variants = {"plain": lambda tree, algorithm: None,  # the digest switched off
                **{name: hashing for name in ckptlib.HASHES}}
    times: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        with ckptlib.Checkpointer(tmp, keep=10 ** 6) as ckpt:  # no deletions inside the timing
            step = 0
            for _ in range(repeats):
                for name, fn in variants.items():  # interleaved: the machine's load drifts
                    ckptlib.array_digests = fn
                    ckptlib.ALGORITHM = name if name in ckptlib.HASHES else "crc32"
                    t = time.perf_counter()
                    ckpt.save(step, state, cfg.to_dict(), force=True)
                    ckpt.wait()
                    times.setdefault(f"save_{name}", []).append(time.perf_counter() - t)
                    t = time.perf_counter()
                    jax.block_until_ready(s.restore(ckpt, step))
                    times.setdefault(f"restore_{name}", []).append(time.perf_counter() - t)
                    shutil.rmtree(ckpt.step_dir(step))  # untimed; keeps the disk use to one step
                    if name != "plain":
                        t = time.perf_counter()
                        hashing(state, name)
                        times.setdefault(f"hash_{name}", []).append(time.perf_counter() - t)
                    step += 1
            ckptlib.array_digests = hashing
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"config": spec, "state_GB": round(nbytes / 1e9, 3), "devices": jax.device_count(),
           "repeats": repeats, "median_s": {k: round(v, 3) for k, v in med.items()}}
    for name in ckptlib.HASHES:
        out[f"{name}_GBps"] = round(nbytes / 1e9 / med[f"hash_{name}"], 2)
        for op in ("save", "restore"):
            out[f"{op}_overhead_pct_{name}"] = round(
                100 * (med[f"{op}_{name}"] / med[f"{op}_plain"] - 1), 1)
            out[f"{op}_hash_share_pct_{name}"] = round(
                100 * med[f"hash_{name}"] / med[f"{op}_plain"], 1)
    out["all_s"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2], *[int(a) for a in sys.argv[2:3]])
