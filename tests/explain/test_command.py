"""`lmjax explain` on a tiny trained CNN: the grid PNG and the JSON, integrated
gradients' default baseline and the black one by name, and a one-line error for a bad
--examples range (Grad-CAM on an MLP: tests/explain/test_gradients.py)."""

import json
import pytest
import os

from lmjax.train.loop import train_and_evaluate

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite


def test_explain_writes_a_picture_and_json_and_refuses_bad_input(
        fashion_config, tmp_path, run_module):
    cfg = fashion_config
    cfg.train.update(num_steps=2, eval_every=2, final_eval_examples=32, eval_examples=32)
    cfg.checkpoint.every = 2
    cfg.log.tensorboard = False
    run = str(tmp_path / "cnn")
    train_and_evaluate(cfg, run)
    out = str(tmp_path / "out")
    r = run_module("explain", f"--workdir={run}", "--method=gradcam", "--examples=3:7",
                   f"--out={out}")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, "gradcam.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "gradcam.json")) as f:
        record = json.load(f)
    assert [e["index"] for e in record["examples"]] == [3, 4, 5, 6]
    assert len(record["examples"][0]["attribution"]) == 28  # rows of a 28x28x1 map
    assert os.path.isdir(os.path.join(run, "tensorboard"))

    # Integrated gradients start from uniform noise unless the literature's black is named.
    for flag, baseline in (((), "uniform"), (("--baseline=black",), "black")):
        r = run_module("explain", f"--workdir={run}", "--method=ig", "--examples=0:2",
                       "--steps=4", f"--out={out}", *flag)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(out, "ig.json")) as f:
            assert json.load(f)["options"]["baseline"] == baseline

    r = run_module("explain", f"--workdir={run}", "--examples=5:900")
    assert r.returncode == 2 and "lmjax: error: --examples='5:900': the split has 200" in r.stderr
