"""ensemble.members=M: member 0 trains exactly as the run without the ensemble, members differ,
evaluation averages the members' probabilities and reports each member."""

import jax
import numpy as np
import pytest

from lmjax.tasks import add_switches, check
from lmjax.eval import metrics
from lmjax.parallel import mesh as meshlib
from lmjax.train.loop import _incompatibilities
from lmjax.train.restore import ONE_DEVICE
from lmjax.train.setup import setup


def trained(cfg, steps=3):
    s = setup(cfg, mesh=meshlib.make_mesh(ONE_DEVICE), log=lambda _: None)
    state, step = s.new_state(), s.train_step()
    for i in range(steps):
        batch = {k: np.asarray(v) for k, v in s.task.train_batch(i).items()}
        state, _ = step(state, batch)
    return s, state


def member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.mark.slow
def test_member_zero_trains_as_the_single_run_and_eval_averages(fashion_config):
    cfg = fashion_config
    cfg.optim.clip_norm = 0.05  # small enough to clip: clipping must be per member
    single, single_state = trained(cfg)
    add_switches(cfg, "ensemble").ensemble.members = 2
    ens, ens_state = trained(cfg)

    # Member 0 is the run without the ensemble: same init, same steps, same clipping.
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)  # noqa
    jax.tree.map(chex_close, member(ens_state.params, 0), single_state.params)
    jax.tree.map(chex_close, member(ens_state.model_state, 0), single_state.model_state)
    assert int(ens_state.step) == 3
    # Member 1 started from another key.
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                        member(ens_state.params, 0), member(ens_state.params, 1))
    assert max(jax.tree.leaves(diff)) > 1e-3

    batch = next(iter(ens.task.eval_batches(16, 16)))
    out = jax.jit(ens.task.eval_outputs)(ens_state.params, ens_state.model_state, batch)
    single_eval = jax.jit(single.task.eval_outputs)
    per_member = [single_eval(member(ens_state.params, i),
                                           member(ens_state.model_state, i), batch)
                  for i in range(2)]
    mean = (per_member[0]["examples"]["probs"] + per_member[1]["examples"]["probs"]) / 2
    np.testing.assert_allclose(out["examples"]["probs"], mean, rtol=1e-5, atol=1e-6)
    nll = metrics.log_loss(np.asarray(mean), np.asarray(batch["labels"]))
    np.testing.assert_allclose(out["sums"]["loss"] / out["sums"]["count"], nll, rtol=1e-4)

    summary = ens.task.summarize(jax.tree.map(np.asarray, out["sums"]),
                                 jax.tree.map(np.asarray, out["examples"]))
    labels = np.asarray(batch["labels"])
    for i in range(2):
        probs = np.asarray(per_member[i]["examples"]["probs"])
        assert summary[f"member{i}_accuracy"] == pytest.approx(
            float((probs.argmax(1) == labels).mean()))
        assert summary[f"member{i}_ece"] == pytest.approx(
            metrics.expected_calibration_error(probs, labels), abs=1e-5)
    assert summary["accuracy"] == pytest.approx(float((np.asarray(mean).argmax(1) == labels).mean()))
    assert summary["members_best_accuracy"] == max(summary["member0_accuracy"],
                                                   summary["member1_accuracy"])


def test_members_are_checked_and_old_checkpoints_mean_one_member(fashion_config):
    cfg = add_switches(fashion_config, "ensemble")
    cfg.ensemble.members = 0
    with pytest.raises(Exception, match="ensemble.members=0"):
        check(cfg)
    cfg.ensemble.members = 3
    stored = cfg.to_dict()
    del stored["ensemble"]  # a run from before ensembles
    assert any("ensemble.members" in d for d in _incompatibilities(stored, cfg))
    cfg.ensemble.members = 1
    assert _incompatibilities(stored, cfg) == []
