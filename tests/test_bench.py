import pytest

from lmjax.train.benchmark import benchmark, flops_per_token, peak_flops


def _tiny_gpt_params(d=32, L=2, T=32, V=84):
    """The tiny preset's parameter count by hand: tied embeddings, learned positions, biases."""
    per_layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d
    return V * d + T * d + L * per_layer + 2 * d


def test_flops_formula_by_hand(load_config):
    cfg = load_config("tiny")  # 2 layers, d=32, context 32
    d, L, T = 32, 2, 32
    n_params = _tiny_gpt_params()
    expected = 6 * (n_params - T * d) + 12 * L * d * T
    assert flops_per_token(cfg.model, n_params) == expected


def test_flops_formula_of_a_decoder_family(load_config):
    # Qwen3-0.6B: tied, rotary (no position table), 16 query heads of 128 on a width of 1,024.
    m = load_config("qwen3_0_6b", "llama.py").model
    L, width, T, n = 28, 16 * 128, 2048, 600_000_000
    assert flops_per_token(m, n) == 6 * n + 12 * L * width * T
    # Untied, the input table is only gathered from: its parameters do no multiplies.
    m.update(tie_embeddings=False, vocab_size=151936)
    assert flops_per_token(m, n) == 6 * (n - 151936 * 1024) + 12 * L * width * T


def test_peak_by_device_kind():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("TPU v4") == 275e12
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", override_tflops=2.0) == 2e12


@pytest.mark.slow
def test_benchmark_runs_the_real_step_on_cpu(tiny_config):
    tiny_config.mesh.data = 2  # two of the simulated devices, data parallel
    r = benchmark(tiny_config, steps=3, warmup=1, peak_tflops=1.0)
    assert r["device"] == "2 x cpu"
    assert r["compile_s"] > 0 and r["step_ms"] > 0
    assert r["tokens_per_s"] == pytest.approx(8 * 32 / (r["step_ms"] / 1e3))
    assert 0 < r["mfu"] < 1
    assert r["loss"] < 4.6  # a real loss near ln(84), not a placeholder


@pytest.mark.slow
def test_pytorch_reference_counts_the_same_parameters_and_times_its_step():
    # The side-by-side is only fair if the PyTorch GPT is the same model: same parameter count
    # as lmjax's for the same shape (tied embeddings, biases, learned positions).
    import subprocess
    import sys
    from pathlib import Path

    torch = pytest.importorskip("torch")
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import torch_gpt
    finally:
        sys.path.pop(0)
    model = torch_gpt.GPT(84, 32, 2, 2, 32)  # vocab, block, layers, heads, width
    assert sum(p.numel() for p in model.parameters()) == _tiny_gpt_params()
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "torch_gpt.py"), "--layers=2",
                          "--heads=2", "--width=32", "--block=32", "--batch=4", "--steps=3",
                          "--warmup=1", "--device=cpu"], capture_output=True, text=True, check=True)
    assert "tokens/s" in out.stdout and torch.__version__ in out.stdout


@pytest.mark.slow
def test_the_compilation_cache_keeps_the_compiled_step(tmp_path, data_cache):
    """compilation_cache=DIR: the first run writes its compiled programs there, the second
    finds them (JAX's persistent cache); the bench reports the compile time of each."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    cmd = [sys.executable, "-m", "lmjax", "bench", "--config=configs/gpt.py:tiny", "--steps=2",
           "--warmup=1", f"--config.data.cache_dir={data_cache}",
           "--config.mesh.host_cpu_devices=1", f"--config.compilation_cache={tmp_path}"]
    first = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    written = set(os.listdir(tmp_path))
    assert any(name.startswith("jit_train_step") for name in written), written
    second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and set(os.listdir(tmp_path)) == written  # all found
