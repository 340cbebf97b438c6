"""The loss-threshold membership attack: its AUC against a pairwise count, and the command on
a short DP run."""

import json
import math

import dp_accounting
import ml_collections
import numpy as np
import pytest
from dp_accounting import pld

from lmjax.privacy import accounting, membership
from lmjax.tasks import add_switches
from lmjax.train.loop import train_and_evaluate


def test_auc_is_the_probability_a_member_has_the_lower_loss():
    rng = np.random.default_rng(0)
    members, others = rng.gamma(2.0, 0.4, 300), rng.gamma(2.0, 0.5, 200)
    members[:5] = others[:5]  # some ties, which count one half
    pairs = members[:, None] - others[None, :]
    reference = ((pairs < 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size
    result = membership.attack(members, others)
    assert result.auc == pytest.approx(reference, abs=1e-12)
    assert 0.5 < result.auc < 0.75 and 0 < result.advantage < 1
    separated = membership.attack(np.zeros(10), np.ones(10))
    assert separated.auc == 1.0 and separated.advantage == 1.0
    same = membership.attack(rng.normal(size=5000), rng.normal(size=5000))
    assert abs(same.auc - 0.5) < 0.02


def test_choose_and_batched_losses():
    assert list(membership.choose(10, 0)) == list(range(10))
    ids = membership.choose(100, 7, seed=1)
    assert len(set(ids.tolist())) == 7 and (np.diff(ids) > 0).all()
    batches = [{"x": np.arange(4.0), "weights": np.array([1, 1, 1, 0])},
               {"x": np.arange(4.0, 8.0), "weights": np.array([1, 0, 0, 0])}]
    np.testing.assert_array_equal(membership.batched_losses(lambda b: b["x"] * 2, batches),
                                  [0, 2, 4, 8])


@pytest.mark.slow
def test_a_dp_run_logs_dp_accountings_epsilon_and_the_command_attacks_it(
        run_module, fashion_config, tmp_path):
    c = fashion_config
    with c.unlocked():  # a small MLP: the wrapper is model-agnostic, and it compiles quickly
        c.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (16,), "dropout": 0.0})
    add_switches(c, "privacy").privacy.update(dp=True, target_epsilon=8.0)
    c.train.update(num_steps=4, eval_every=2, log_every=2, eval_examples=64,
                   final_eval_examples=64)
    c.checkpoint.every = 4
    c.log.tensorboard = False
    work = tmp_path / "run"
    summary = train_and_evaluate(c, str(work))
    rows = [json.loads(line) for line in open(work / "metrics.jsonl")]
    logged = {r["step"]: r["epsilon"] for r in rows if "epsilon" in r}
    assert set(logged) == {2, 4} and math.isfinite(summary["val_loss"])
    q, sigma = 32 / 500, accounting.calibrate(8.0, 32 / 500, 4, 1e-5)  # 500 examples, batch 32
    for step, eps in logged.items():
        acc = pld.PLDAccountant()  # dp-accounting's own, straight from its API
        acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            q, dp_accounting.GaussianDpEvent(sigma)), step))
        assert eps == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert 7.5 < logged[4] <= 8.0  # calibrated to spend the whole budget, no more

    out = tmp_path / "mia.json"
    r = run_module("membership", f"--workdir={work}", "--examples=150", f"--out={out}",
                   timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dp"] and result["members"] == result["non_members"] == 150
    assert 0.0 <= result["auc"] <= 1.0 and "AUC" in r.stdout
    bad = run_module("membership", f"--workdir={tmp_path / 'nothing'}", timeout=300)
    assert bad.returncode == 2 and "lmjax: error:" in bad.stderr
