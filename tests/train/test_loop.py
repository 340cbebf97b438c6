"""End-to-end behaviour of the trainer on the tiny config: learning, resuming, checkpoints."""

import json
import os

import jax
import numpy as np
import pytest

from lmjax.checkpoint import CheckpointError
from lmjax.tasks import add_switches
from lmjax.train import loop
from lmjax.train.restore import load_run
from lmjax.train.loop import train_and_evaluate


def _losses(workdir, split="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == split}


def _one_device(cfg):
    cfg.mesh.data = 1  # the tests run with 8 devices; these runs want a 1-device mesh
    return cfg


@pytest.fixture
def cfg(tiny_config):
    c = tiny_config
    c.sample.num_samples = 0
    c.train.final_eval_examples = 16
    return c


@pytest.mark.slow
def test_run_learns_and_writes_its_outputs(cfg, tmp_path):
    cfg.train.num_steps = 60
    cfg.train.log_every = 10
    cfg.optim.learning_rate = 1e-2
    cfg.log.tensorboard = True
    cfg.sample.num_samples = 1
    summary = train_and_evaluate(cfg, str(tmp_path))
    losses = _losses(tmp_path)
    assert losses[60] < losses[10] - 0.15
    assert summary["val_loss"] < 3.4  # uniform guessing over 84 characters would be 4.43
    assert os.listdir(tmp_path / "tensorboard")
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["model"]["d_model"] == cfg.model.d_model


@pytest.mark.slow
def test_interrupted_then_resumed_run_repeats_the_same_losses(cfg, tmp_path, monkeypatch):
    cfg.model.dropout = 0.1  # dropout noise must resume exactly too
    cfg.train.num_steps, cfg.train.log_every, cfg.checkpoint.every = 20, 1, 100
    straight = str(tmp_path / "straight")
    train_and_evaluate(cfg, straight)
    # The same run, preempted after step 7 (as SIGTERM would), then started again; and without
    # prefetching, which must change only timing.
    split = str(tmp_path / "split")
    cfg.data.prefetch = 0
    monkeypatch.setattr(loop._StopFlag, "should_stop", lambda self, step: step == 7)
    with pytest.raises(loop.Preempted):
        train_and_evaluate(cfg, split)
    assert os.listdir(os.path.join(split, "checkpoints")) == ["7"]
    monkeypatch.undo()
    train_and_evaluate(cfg, split)
    a, b = _losses(straight), _losses(split)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), step
    assert _losses(straight, "val") == pytest.approx(_losses(split, "val"), rel=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_matches_the_full_batch(cfg, tmp_path):
    cfg.train.num_steps, cfg.train.log_every = 6, 1
    cfg.model.dropout = 0.0
    train_and_evaluate(_one_device(cfg), str(tmp_path / "full"))
    cfg.train.grad_accum = 4
    train_and_evaluate(cfg, str(tmp_path / "accum"))
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "accum")
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5), step


@pytest.mark.slow
def test_checkpoint_from_8_devices_restores_on_1(cfg, tmp_path):
    cfg.train.num_steps = 10
    cfg.mesh.update(data=2, fsdp=2, tensor=2)
    eight = train_and_evaluate(cfg, str(tmp_path))
    one = _one_device(cfg.copy_and_resolve_references())
    one.mesh.update(fsdp=1, tensor=1)
    again = train_and_evaluate(one, str(tmp_path))  # already at num_steps: restore + evaluate
    assert again["val_loss"] == pytest.approx(eight["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_not_overwritten(cfg, tmp_path):
    cfg.train.num_steps = 10
    train_and_evaluate(cfg, str(tmp_path))
    cfg.model.d_model = 48
    with pytest.raises(CheckpointError, match="model.d_model: checkpoint 32, config 48"):
        train_and_evaluate(cfg, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]


@pytest.mark.slow
def test_corrupt_checkpoint_gives_a_clear_error(cfg, tmp_path):
    cfg.train.num_steps = 10
    train_and_evaluate(cfg, str(tmp_path))
    state_dir = tmp_path / "checkpoints" / "10" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name != "_METADATA":  # keep the tree description, destroy the array data
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    with pytest.raises(CheckpointError, match="could not be restored.*left untouched"):
        train_and_evaluate(cfg, str(tmp_path))
    assert (tmp_path / "checkpoints" / "10").exists()


def test_mesh_that_does_not_divide_the_devices_is_refused(cfg, tmp_path):
    cfg.mesh.data = 3
    with pytest.raises(ValueError, match="mesh"):
        train_and_evaluate(cfg, str(tmp_path))


@pytest.mark.slow
def test_on_eval_sees_each_periodic_evaluation_and_can_stop_the_run(cfg, tmp_path):
    _one_device(cfg)
    seen = []

    class Stop(Exception):
        pass

    def on_eval(step, metrics):
        seen.append((step, metrics["loss"]))
        if step == 20:
            raise Stop

    cfg.train.num_steps, cfg.train.eval_every = 40, 10
    with pytest.raises(Stop):
        train_and_evaluate(cfg, str(tmp_path), on_eval=on_eval)
    assert [s for s, _ in seen] == [10, 20]
    assert seen[1][1] == pytest.approx(_losses(tmp_path, "val")[20])


@pytest.mark.slow
def test_a_diverging_run_stops_with_a_clear_error(cfg, tmp_path):
    _one_device(cfg)
    cfg.optim.update(name="sgd", learning_rate=1e6, clip_norm=0.0, warmup_steps=0, momentum=0.0)
    with pytest.raises(loop.Diverged, match="learning_rate"):
        train_and_evaluate(cfg, str(tmp_path))


def test_monitor_follows_a_scripted_validation_curve(cfg):
    cfg.train.update(early_stopping_metric="f1", early_stopping_mode="max", patience=2)
    monitor = loop.Monitor(cfg)
    curve = [0.5, 0.6, 0.55, 0.7, 0.69, 0.7, 0.9]
    stopped = None
    for i, value in enumerate(curve):
        improved = monitor.update(10 * (i + 1), {"f1": value})
        assert improved == (value > max(curve[:i], default=-1))
        if monitor.should_stop:
            stopped = 10 * (i + 1)
            break
    assert (stopped, monitor.best, monitor.best_step) == (60, 0.7, 40)
    # The state survives a checkpoint round trip.
    again = loop.Monitor(cfg, json.loads(json.dumps(monitor.state())))
    assert again.should_stop and again.best_step == 40


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint_and_delivers_it(cfg, tmp_path, monkeypatch):
    _one_device(cfg)
    cfg.train.update(num_steps=100, eval_every=5, early_stopping_metric="loss", patience=2)
    cfg.checkpoint.every = 1000
    curve = iter([3.0, 2.0, 2.5, 2.2, 2.1])  # best at the 2nd evaluation, stop at the 4th
    real = loop.evaluate

    def scripted(*args, **kwargs):
        metrics = real(*args, **kwargs)
        return {**metrics, "loss": next(curve, 9.0)}

    monkeypatch.setattr(loop, "evaluate", scripted)
    summary = train_and_evaluate(cfg, str(tmp_path))
    assert summary["step"] == 20 and summary["best_step"] == 10
    assert os.listdir(tmp_path / "best") == ["10"]
    assert os.listdir(tmp_path / "checkpoints") == ["20"]
    # The delivered model is the best one: its accuracy is that of the evaluation at step 10.
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    at_10 = next(r for r in rows if r["split"] == "val" and r["step"] == 10)
    assert summary["val_accuracy"] == pytest.approx(at_10["accuracy"])


@pytest.mark.slow
def test_init_from_copies_another_runs_weights(cfg, tmp_path):
    _one_device(cfg)
    cfg.train.num_steps = 10
    train_and_evaluate(cfg, str(tmp_path / "pre"))
    cfg.init_from = str(tmp_path / "pre")
    cfg.train.num_steps = 1
    cfg.optim.update(learning_rate=0.0, muon_learning_rate=0.0, warmup_steps=0)  # keep them
    train_and_evaluate(cfg, str(tmp_path / "fine"))
    _, _, pre = load_run(str(tmp_path / "pre"))
    _, _, fine = load_run(str(tmp_path / "fine"))
    for a, b in zip(jax.tree.leaves(pre.params), jax.tree.leaves(fine.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_confusion_matrix_image_shows_each_true_class_row_normalised():
    image = loop.confusion_image([[3, 1], [0, 0]], cell=2)
    assert image.shape == (4, 4) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[::2, ::2], [[191, 64], [0, 0]])  # 3/4 and 1/4 of white


@pytest.mark.slow
def test_bf16_compute_follows_the_fp32_loss_curve(cfg, tmp_path):
    # Speed must not cost quality: bf16 compute with fp32 parameters tracks fp32 training.
    # Tolerance: 2% of the loss at every logged step (measured on the CPU default in
    # docs/performance.md).
    cfg.train.num_steps, cfg.train.log_every = 40, 5
    cfg.optim.learning_rate = 1e-2
    train_and_evaluate(cfg, str(tmp_path / "fp32"))
    cfg.model.dtype = "bfloat16"
    train_and_evaluate(cfg, str(tmp_path / "bf16"))
    a, b = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert sorted(a) == sorted(b) and a[40] < a[5] - 0.3  # it learned
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=0.02), step
    assert a != b  # bf16 really ran: the curves are close, not identical


def test_a_cnn_config_resumes_its_own_checkpoint_and_names_a_changed_sparsity(load_config):
    """The checkpoint stores the config as JSON (tuples come back as lists): the same config
    is compatible; turning pruning on (masks in the optimizer state) is named."""
    cfg = load_config("tiny", "fashion_mnist.py")
    stored = json.loads(json.dumps(cfg.to_dict()))
    assert loop._incompatibilities(stored, cfg) == []
    add_switches(cfg, "prune").prune.target_sparsity = 0.5
    assert loop._incompatibilities(stored, cfg) == [
        "prune.target_sparsity: checkpoint 0.0, config 0.5"]
    stored["prune"] = json.loads(json.dumps(cfg.prune.to_dict()))  # the other way round
    del cfg["prune"]
    assert loop._incompatibilities(stored, cfg) == [
        "prune.target_sparsity: checkpoint 0.5, config 0.0"]
