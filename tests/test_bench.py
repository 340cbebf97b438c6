import pytest

from lmjax.bench import benchmark, flops_per_token, peak_flops


def test_flops_formula_by_hand(load_config):
    cfg = load_config("tiny")  # 2 layers, d=32, context 32
    d, L, T, V = 32, 2, 32, 84
    per_layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d
    n_params = V * d + T * d + L * per_layer + 2 * d
    expected = 6 * (n_params - T * d) + 12 * L * d * T
    assert flops_per_token(cfg, n_params) == expected


def test_peak_by_device_kind():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("TPU v4") == 275e12
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", override_tflops=2.0) == 2e12


def test_benchmark_runs_the_real_step_on_cpu(tiny_config):
    tiny_config.mesh.data = 2  # two of the simulated devices, data parallel
    r = benchmark(tiny_config, steps=3, warmup=1, peak_tflops=1.0)
    assert r["device"] == "2 x cpu"
    assert r["compile_s"] > 0 and r["step_ms"] > 0
    assert r["tokens_per_s"] == pytest.approx(8 * 32 / (r["step_ms"] / 1e3))
    assert 0 < r["mfu"] < 1
    assert r["loss"] < 4.6  # a real loss near ln(84), not a placeholder
