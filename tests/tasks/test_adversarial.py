"""robust.attack: adversarial training runs on the tiny image config, its loss is the loss on
attacked images, and lmjax robustness attacks the saved run; bad input is refused."""

import json

import jax
import numpy as np
import pytest

from lmjax.config import load_config
from lmjax.tasks import add_switches, check, make_task
from lmjax.train.loop import train_and_evaluate


@pytest.fixture
def mlp_config(fashion_config):
    """The tiny Fashion-MNIST config with a small MLP: attacks compile in a fraction of the
    CNN's time (the CNN path is the same code: ClassificationTask._apply)."""
    c = fashion_config
    with c.model.unlocked():
        for key in list(c.model.keys()):
            del c.model[key]
        c.model.update(name="mlp", hidden=(32,), dropout=0.0)
    c.log.tensorboard = False
    return c


def test_adversarial_loss_is_above_the_clean_loss(mlp_config):
    cfg = add_switches(mlp_config, "robust")
    cfg.robust.update(attack="pgd", eps=0.1, steps=3)
    task = make_task(cfg, log=lambda _: None)
    assert "pgd at eps=0.1" in task.describe()
    variables = task.init_variables(jax.random.key(0))
    params, model_state = variables["params"], {}
    batch = {k: np.asarray(v) for k, v in task.train_batch(0).items()}
    rng = jax.random.key(1)
    adv, _ = jax.jit(task.loss)(params, model_state, batch, rng)
    clean, _ = jax.jit(task.inner.loss)(params, model_state, batch, rng)
    assert float(adv) > float(clean) + 1e-3


@pytest.mark.slow
def test_training_runs_and_the_robustness_command_attacks_the_run(mlp_config, tmp_path,
                                                                   run_module):
    cfg = add_switches(mlp_config, "robust")
    cfg.robust.update(attack="fgsm_rs", eps=0.1)
    cfg.train.update(num_steps=4, eval_every=4, final_eval_examples=64, eval_examples=64)
    cfg.checkpoint.every = 4
    cfg.log.tensorboard = False
    summary = train_and_evaluate(cfg, str(tmp_path / "run"))
    assert np.isfinite(summary["val_loss"])

    out = tmp_path / "rows.json"
    result = run_module("robustness", f"--workdir={tmp_path / 'run'}", "--eps=0.3,0.02",
                        "--steps=3", "--examples=48", "--batch_size=24", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert "PGD-3 on 48 test images" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["eps"] for r in rows] == [0.02, 0.3]
    assert rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"] <= rows[0]["clean_accuracy"]
    assert all(r["max_perturbation"] <= r["eps"] + 1e-6 for r in rows)

    bad = run_module("robustness", f"--workdir={tmp_path / 'run'}", "--eps=1.5")
    assert bad.returncode == 2 and "lmjax: error: --eps=1.5" in bad.stderr


def test_bad_robust_settings_are_refused(fashion_config):
    cfg = add_switches(fashion_config, "robust")
    cfg.robust.attack = "cw"
    with pytest.raises(Exception, match="robust.attack='cw'"):
        check(cfg)
    cfg.robust.update(attack="pgd", eps=0.0)
    with pytest.raises(Exception, match=r"robust.eps=0.0.*\(0, 1\]"):
        check(cfg)
    cfg.robust.eps = 0.1
    add_switches(cfg, "ensemble").ensemble.members = 2
    with pytest.raises(Exception, match="ensemble.members > 1"):
        check(cfg)
    gpt = load_config("configs/gpt.py:tiny+robust")
    gpt.robust.attack = "pgd"
    with pytest.raises(Exception, match="image classifiers"):
        check(gpt)
    table = load_config("configs/tabular.py:breast_cancer+robust")
    table.robust.attack = "fgsm_rs"
    with pytest.raises(ValueError, match="not images"):
        make_task(table, log=lambda _: None)
