"""The opt-in XLA GPU flag list is one this XLA knows (an unknown flag aborts XLA at start)."""

import os
import pytest
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _flags() -> list[str]:
    lines = (ROOT / "launch" / "xla_gpu_flags.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow
def test_every_flag_is_known_to_xla():
    flags = _flags()
    assert flags and all(f.startswith("--xla_gpu_") and "=" in f for f in flags)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
    r = subprocess.run([sys.executable, "-c", "import jax.numpy as j; print(j.ones(3).sum())"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "3.0", r.stderr[-500:]
    # and the check itself works: XLA refuses a flag it does not know
    env["XLA_FLAGS"] = "--xla_gpu_no_such_flag=true"
    r = subprocess.run([sys.executable, "-c", "import jax.numpy as j; j.ones(3).sum()"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Unknown flag" in r.stderr


def test_the_gpu_launcher_applies_them_only_when_asked():
    script = (ROOT / "launch" / "gpu.sh").read_text()
    assert 'LMJAX_XLA_GPU_FLAGS:-0}" == 1' in script and "xla_gpu_flags.txt" in script
