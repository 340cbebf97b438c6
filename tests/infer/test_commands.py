"""The user-facing commands on a real (tiny) run's workdir: generate, quantize and generate
from the int8 export, convert to Hugging Face."""

import jax
import numpy as np
import pytest

from lmjax.infer import int8 as q
from lmjax.infer.export import quantize_run
from lmjax.infer.load import load
from lmjax.models.generator import Generator, Request

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite


@pytest.fixture(scope="module")
def run(tmp_path_factory, load_config, data_cache):
    """A tiny run's workdir holding its step-0 checkpoint (what training writes, minus the
    training: the commands only read checkpoints)."""
    from lmjax.convert.hf import write_run

    cfg = load_config("tiny")
    cfg.data.cache_dir = data_cache
    cfg.mesh.host_cpu_devices = 0
    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    write_run(cfg, workdir, log=lambda s: None)
    return workdir


def test_int8_kernels_follow_the_per_channel_absmax_formula(run):
    loaded = load(run)
    _, qparams = q.quantize(loaded.model, loaded.params)
    w = np.asarray(loaded.params["block_0"]["mlp"]["fc"]["kernel"])  # (in, out)
    got = qparams["block_0"]["mlp"]["fc"]["kernel"].array
    # One scale per output channel from its largest |weight|; qwix maps it to 127.5 so that
    # rounding uses all of int8's [-128, 127].
    scale = np.abs(w).max(axis=0, keepdims=True) / 127.5
    np.testing.assert_allclose(np.asarray(got.scale), scale, rtol=1e-6)
    assert got.qvalue.dtype == np.int8
    x = w / scale
    same = np.asarray(got.qvalue, np.int32) == np.clip(np.round(x), -128, 127)
    assert np.all(same | (np.abs(x) > 127.49))  # each channel's extreme sits on a rounding tie
    sizes, float_sizes = q.weight_bytes(qparams), q.weight_bytes(loaded.params)
    assert 3.5 < float_sizes["matrices"] / sizes["matrices"] <= 4


def test_quantize_then_generate_and_serve_from_the_export(run, tmp_path):
    out = str(tmp_path / "int8")
    report = quantize_run(run, out, eval_examples=64, log=lambda s: None)
    assert report["int8_disk"] < report["float_disk"]  # (metadata weighs on tiny models)
    # Weight-only int8 barely moves the loss of a trained model.
    assert abs(report["val_loss_int8"] - report["val_loss_float"]) < 0.02 * report[
        "val_loss_float"]
    exported = load(out)
    assert "int8" in exported.source
    gen = Generator(exported.model, exported.params, exported.tokenizer)
    assert len(gen.generate([Request("ROMEO:", 20, temperature=0.8)])[0].tokens) == 20


def test_generate_command(run, run_module):
    result = run_module("generate", f"--workdir={run}", "--prompt=ROMEO:",
                        "--prompt=KING:", "--max_new_tokens=40", "--top_k=5", "--top_p=0.9",
                        "--seed=2")
    assert result.returncode == 0, result.stderr
    assert "ROMEO:" in result.stdout and "KING:" in result.stdout
    assert "80 tokens" in result.stderr  # 40 each: past the tiny model's context of 32


def test_loading_errors_name_the_problem(run, tmp_path):
    from lmjax.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="is not a directory"):
        load(str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="No checkpoints"):
        load(str(tmp_path))


def test_to_hf_command_writes_what_transformers_loads(run, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lmjax.convert.hf import to_hf

    to_hf(run, str(tmp_path))
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    loaded = load(run)
    ids = loaded.tokenizer.encode("ROMEO: what say you?")[None]
    with torch.no_grad():
        theirs = hf(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    ours = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params}, ids))
    assert np.abs(ours - theirs).max() <= 1e-4
