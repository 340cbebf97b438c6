"""The compression table: int8 weights against their definition, and one tiny trained CNN with
its structured-pruned export measured end to end (the export loads like any run)."""

import numpy as np
import pytest

from lmjax.compress import compare, structured
from lmjax.train.restore import evaluate_run


def test_int8_weights_are_per_channel_absmax():
    r = np.random.default_rng(0)
    params = {"Dense_0": {"kernel": r.normal(size=(6, 4)).astype(np.float32),
                          "bias": r.normal(size=4).astype(np.float32)}}
    restored, stored = compare.int8_weights(params)
    k = params["Dense_0"]["kernel"]
    q, scale = stored["Dense_0"]["kernel"]["q"], stored["Dense_0"]["kernel"]["scale"]
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    np.testing.assert_allclose(scale, np.abs(k).max(0) / 127, rtol=1e-6)
    assert np.all(np.abs(restored["Dense_0"]["kernel"] - k) <= scale / 2 + 1e-7)
    np.testing.assert_array_equal(restored["Dense_0"]["bias"], params["Dense_0"]["bias"])


@pytest.mark.slow
def test_table_of_a_run_and_its_narrow_export(fashion_config, save_untrained, tmp_path):
    run, narrow = str(tmp_path / "run"), str(tmp_path / "narrow")
    save_untrained(fashion_config, run)
    info = structured.export(run, narrow, 0.5, log=lambda s: None)
    assert info["model"]["channels"] == [4, 8]
    # the export is a run directory the usual commands load: its accuracy is the shrunk model's
    assert 0.0 <= evaluate_run(narrow, "test")["accuracy"] <= 1.0

    rows = compare.measure([("dense", run), ("narrow", narrow)], repeats=2, with_int8=True,
                          log=lambda s: None)
    assert [r["variant"] for r in rows] == ["dense", "dense int8", "narrow"]
    dense, int8, small = rows
    assert dense["params"] == info["params_before"] and small["params"] == info["params_after"]
    assert small["disk_MB"] < dense["disk_MB"]
    assert int8["metric"] == pytest.approx(dense["metric"], abs=0.05)
    assert dense["throughput"] > 0 and int8["throughput"] is None
    text = compare.table(rows)
    assert "| narrow |" in text and "images/s" in text and "test accuracy" in text


def test_bad_variant_is_one_error_line(run_module, tmp_path):
    r = run_module("compress_report", f"--workdir={tmp_path}", "--variants=oops",
                   timeout=120)
    assert r.returncode == 2 and "lmjax: error: --variants: 'oops' is not NAME=RUN_DIRECTORY" \
        in r.stderr
