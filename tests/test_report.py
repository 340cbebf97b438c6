"""`lmjax report`: curves and a side-by-side summary of runs from their metrics.jsonl
(the library lmjax/eval/curves.py, and the command through a subprocess)."""

import json
import re

import matplotlib.image
import numpy as np
import pytest

from lmjax.eval import curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(workdir, records, starts):
    workdir.mkdir(parents=True)
    with open(workdir / "metrics.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (workdir / "run_info.json").write_text(json.dumps({"sessions": [{"start": s} for s in starts]}))
    return str(workdir)


def rec(step, split, t, **metrics):
    return {"step": step, "split": split, "time": t, **metrics}


@pytest.fixture
def runs(tmp_path):
    # Run a: interrupted after step 20 and resumed from its step-10 checkpoint 1000 s later, so
    # steps 20 repeat (the later records count); it logged 100/300/200 tokens/s.
    a = write_run(tmp_path / "a", [
        rec(10, "train", 1005.0, loss=4.0, tokens_per_s=100.0),
        rec(10, "val", 1006.0, loss=3.0, accuracy=0.1),
        rec(20, "train", 1008.0, loss=3.5, tokens_per_s=300.0),
        rec(20, "val", 1010.0, loss=9.9, accuracy=0.9),
        rec(20, "train", 2020.0, loss=3.4, tokens_per_s=200.0),
        rec(20, "val", 2021.0, loss=2.5, accuracy=0.3),
        rec(30, "val", 2030.0, loss=2.7, accuracy=0.2),
    ], starts=[1000.0, 2000.0])
    b = write_run(tmp_path / "b", [
        rec(10, "train", 5.0, loss=3.9, tokens_per_s=50.0),
        rec(10, "val", 6.0, loss=3.1, accuracy=0.4),
    ], starts=[0.0])
    return a, b


def test_summary_takes_final_best_and_throughput_from_the_records(runs):
    s = curves.summarize(curves.load_run(runs[0]))
    assert s["steps"] == 30
    assert s["wall time"] == pytest.approx(10.0 + 30.0)  # two sessions, the idle gap left out
    assert s["tokens/s"] == np.median([100.0, 200.0])  # the resumed step 20 replaced 300
    assert s["final train loss"] == 3.4
    assert s["final val loss"] == 2.7 and s["best val loss"] == (2.5, 20)  # lower is better
    assert s["final val accuracy"] == 0.2 and s["best val accuracy"] == (0.3, 20)  # higher


def test_the_library_writes_curves_and_a_side_by_side_table(runs, tmp_path):
    out = tmp_path / "out"
    returned = curves.report(list(runs), str(out))
    text = (out / "report.md").read_text()
    assert text == returned
    assert "| | a | b |" in text
    assert "| best val loss | 2.5000 (step 20) |  |" in text
    assert "| final val accuracy | 0.2000 | 0.4000 |" in text
    assert "| wall time | 0m40s | 0m06s |" in text
    for name in ("train_loss", "val_loss", "val_accuracy"):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC), name
        assert matplotlib.image.imread(out / f"{name}.png").shape[2] in (3, 4)
        assert f"({name}.png)" in text
    assert not (out / "train_tokens_per_s.png").exists()


def test_the_command_prints_the_report_it_writes(runs, tmp_path, run_module):
    out = tmp_path / "out"
    r = run_module("report", *runs, f"--out={out}")
    assert r.returncode == 0, r.stderr
    text = (out / "report.md").read_text()
    assert text == r.stdout.split("Curves and report.md")[0].rstrip("\n") + "\n"
    assert f"Curves and report.md in {out}" in r.stdout
    assert "| best val loss | 2.5000 (step 20) |  |" in text
    assert sorted(p.name for p in out.glob("*.png")) == ["train_loss.png", "val_accuracy.png",
                                                         "val_loss.png"]


def test_a_directory_without_metrics_is_a_clear_error(tmp_path, run_module):
    message = f"{tmp_path} has no metrics.jsonl: pass the --workdir of a training run."
    with pytest.raises(curves.ReportError, match=re.escape(message)):
        curves.report([str(tmp_path)], str(tmp_path / "out"))
    r = run_module("report", tmp_path, f"--out={tmp_path / 'out'}")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("lmjax:")]
    assert errors == [f"lmjax: error: {message} (LMJAX_DEBUG=1 shows the traceback)"], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "out").exists()


def test_the_command_without_workdirs_says_what_to_give(run_module):
    r = run_module("report")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("lmjax:")]
    assert len(errors) == 1 and errors[0].startswith(
        "lmjax: error: give one or more run directories"), r.stderr


def test_runs_with_the_same_folder_name_get_distinct_labels():
    assert curves.labels(["x/trials/0000", "y/trials/0000"]) == ["x/trials/0000",
                                                                 "y/trials/0000"]
    assert curves.labels(["runs/a", "runs/b"]) == ["a", "b"]
