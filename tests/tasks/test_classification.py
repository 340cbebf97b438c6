"""Classification and regression tasks through the one trainer, checked against scikit-learn."""

import json
import os

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from lmjax.tasks import make_task
from lmjax.train.crossval import fit
from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import load_run


@pytest.fixture
def cnn_cfg(fashion_config):
    c = fashion_config
    c.mesh.data = 2
    c.log.tensorboard = False
    return c


@pytest.mark.slow
def test_cnn_learns_and_reports_test_metrics_of_its_best_checkpoint(cnn_cfg, tmp_path):
    cnn_cfg.train.update(num_steps=120, eval_every=40)
    cnn_cfg.optim.learning_rate = 2e-2
    summary = train_and_evaluate(cnn_cfg, str(tmp_path))
    assert summary["test_accuracy"] > 0.4 and summary["test_roc_auc"] > 0.9  # chance: 0.1, 0.5
    assert set(summary) >= {"val_f1_macro", "val_roc_auc", "test_log_loss", "best_step"}
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    vals = {r["step"]: r["accuracy"] for r in rows if r["split"] == "val"}
    assert summary["best_step"] == max(vals, key=lambda s: (vals[s], -s))
    assert os.listdir(tmp_path / "best") == [str(summary["best_step"])]
    # The restored best state has batch-norm statistics that evaluation uses.
    _, _, state = load_run(str(tmp_path), best=True)
    assert jax.tree.leaves(state.model_state)


def _trained(cfg, tmp_path):
    train_and_evaluate(cfg, str(tmp_path))
    _, task, state = load_run(str(tmp_path), best=True)  # the delivered model
    return task, state


def _predictions(task, state, split):
    batches = list(task.eval_batches(64, 0, split))
    outs = [task.eval_outputs(state.params, state.model_state, b) for b in batches]
    keep = np.concatenate([b["weights"] for b in batches]) > 0
    return {k: np.concatenate([np.asarray(o["examples"][k]) for o in outs])[keep]
            for k in outs[0]["examples"]}


def _tabular(load_config, preset):
    c = load_config(preset, "tabular.py")
    c.train.update(num_steps=300, eval_every=100)
    c.log.tensorboard = False
    return c


def test_regression_mse_matches_scikit_learn(load_config, tmp_path):
    cfg = _tabular(load_config, "diabetes")
    task, state = _trained(cfg, tmp_path)
    out = _predictions(task, state, "test")
    scale, shift = task.data.target_scale, task.data.target_shift
    preds, targets = out["preds"] * scale + shift, out["targets"] * scale + shift
    summary = json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])
    assert summary["split"] == "best_test" or summary["split"] == "test"
    assert summary["mse"] == pytest.approx(skm.mean_squared_error(targets, preds), rel=1e-5)
    assert summary["r2"] == pytest.approx(skm.r2_score(targets, preds), rel=1e-5)
    assert summary["r2"] > 0.3  # the diabetes targets are predictable, linearly about 0.45


def test_binary_log_loss_matches_scikit_learn(load_config, tmp_path):
    cfg = _tabular(load_config, "breast_cancer")
    task, state = _trained(cfg, tmp_path)
    out = _predictions(task, state, "test")
    summary = json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])
    assert summary["log_loss"] == pytest.approx(skm.log_loss(out["labels"], out["probs"]),
                                                rel=1e-5)
    assert summary["roc_auc"] == pytest.approx(skm.roc_auc_score(out["labels"],
                                                                 out["probs"][:, 1]))
    assert summary["accuracy"] > 0.9


def test_standardisation_is_fitted_on_training_rows_only(load_config):
    task = make_task(_tabular(load_config, "diabetes"), log=lambda s: None)
    np.testing.assert_allclose(task.data.train.inputs.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(task.data.train.inputs.std(0), 1, atol=1e-3)
    assert np.abs(task.data.test.inputs.mean(0)).max() > 1e-3  # not refitted on the test rows
    assert abs(task.data.train.labels.mean()) < 1e-5


@pytest.mark.slow
def test_kfold_trains_k_runs_and_reports_mean_and_std(load_config, tmp_path):
    cfg = _tabular(load_config, "breast_cancer")
    cfg.train.num_steps = 100
    cfg.data.num_folds = 3
    summary = fit(cfg, str(tmp_path))
    assert sorted(os.listdir(tmp_path))[:3] == ["fold_0", "fold_1", "fold_2"]
    stored = json.load(open(tmp_path / "kfold.json"))
    accs = [f["val_accuracy"] for f in stored["folds"]]
    assert summary["val_accuracy"] == pytest.approx(np.mean(accs))
    assert summary["val_accuracy_std"] == pytest.approx(np.std(accs))


@pytest.mark.slow
def test_flip_test_time_augmentation_averages_image_and_mirror_probabilities(cnn_cfg):
    cnn_cfg.model.head_hidden = (16,)  # a dense head: the model is not mirror-symmetric
    task = make_task(cnn_cfg, log=lambda s: None)
    variables = dict(task.init_variables(jax.random.PRNGKey(0)))
    params = variables.pop("params")
    batch = next(iter(task.eval_batches(8, 0, "val")))
    mirrored = dict(batch, inputs=batch["inputs"][:, :, ::-1])

    def probs(b, flip):
        task.cfg.data.eval_flip = flip
        return np.asarray(task.eval_outputs(params, variables, b)["examples"]["probs"])

    plain, mirror, tta = probs(batch, False), probs(mirrored, False), probs(batch, True)
    assert np.abs(plain - mirror).max() > 1e-4
    np.testing.assert_allclose(tta, (plain + mirror) / 2, atol=1e-6)
    np.testing.assert_allclose(tta.sum(-1), 1.0, atol=1e-5)
