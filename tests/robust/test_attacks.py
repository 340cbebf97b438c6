"""The attacks against foolbox 3.3.4's LinfPGD on a small trained model (scikit-learn's 8x8
digits), and their invariants: within eps, within [0, 1], FGSM hurts, bad eps refused."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.models.baselines import MLP
from lmjax.robust import attacks
from lmjax.robust.accuracy import robust_accuracy


@pytest.fixture(scope="module")
def digits_model():
    """(logits_fn, x in [0, 1], labels): an MLP trained to ~97% on 600 of sklearn's digits."""
    from sklearn.datasets import load_digits
    data = load_digits()
    x = jnp.asarray(data.data[:600] / 16.0, jnp.float32)
    y = jnp.asarray(data.target[:600])
    model = MLP(num_outputs=10, hidden=(32,))
    params = model.init(jax.random.key(0), x[:1])
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
            model.apply(p, x), y).mean()
        updates, opt = tx.update(jax.grad(loss)(params), opt)
        return optax.apply_updates(params, updates), opt

    for _ in range(150):
        params, opt = step(params, opt)
    fn = jax.jit(lambda v: model.apply(params, v))
    return fn, x[:300], y[:300]


def accuracy(fn, x, y) -> float:
    return float((fn(x).argmax(-1) == y).mean())


@pytest.mark.slow
def test_pgd_matches_foolbox_linf_pgd(digits_model):
    import foolbox as fb
    fn, x, y = digits_model
    eps, steps = 0.08, 20
    clean = accuracy(fn, x, y)
    assert clean > 0.9
    ours = jax.jit(lambda x, y, k: attacks.pgd(fn, x, y, eps, k, steps=steps,
                                               step_size=0.01))(x, y, jax.random.key(1))
    theirs_attack = fb.attacks.LinfPGD(steps=steps, abs_stepsize=0.01, random_start=True)
    _, theirs, success = theirs_attack(fb.JAXModel(fn, bounds=(0, 1)), x, y, epsilons=eps)
    ours_acc = accuracy(fn, ours, y)
    theirs_acc = 1.0 - float(np.mean(np.asarray(success)))
    assert abs(accuracy(fn, jnp.asarray(theirs), y) - theirs_acc) < 1e-6
    # A meaningful comparison: the attack bites but does not take everything.
    assert 0.05 < theirs_acc < clean - 0.2, (clean, theirs_acc)
    assert abs(ours_acc - theirs_acc) <= 0.02, (ours_acc, theirs_acc)


def test_perturbations_stay_in_the_ball_and_the_unit_box(digits_model):
    fn, x, y = digits_model
    eps = 0.1
    key = jax.random.key(0)
    for x_adv in (attacks.fgsm(fn, x, y, eps), attacks.fgsm_rs(fn, x, y, eps, key),
                  attacks.pgd(fn, x, y, eps, key, steps=5, restarts=2)):
        assert float(jnp.abs(x_adv - x).max()) <= eps + 1e-6
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
        assert float(jnp.abs(x_adv - x).max()) > eps / 2  # it moved


def test_attacks_reduce_accuracy_and_pgd_is_stronger(digits_model):
    fn, x, y = digits_model
    clean = accuracy(fn, x, y)
    fgsm = accuracy(fn, attacks.fgsm(fn, x, y, 0.1), y)
    pgd = accuracy(fn, attacks.pgd(fn, x, y, 0.1, jax.random.key(0), steps=10), y)
    assert fgsm < clean - 0.1
    assert pgd <= fgsm


def test_robust_accuracy_table_falls_with_eps(digits_model):
    fn, x, y = digits_model
    batches = [{"pixels": x[i:i + 100], "labels": y[i:i + 100],
                "weights": jnp.ones(100)} for i in range(0, 300, 100)]
    rows = robust_accuracy(lambda _, v: fn(v), None, batches, [0.03, 0.1], "pgd", steps=10)
    assert [r["examples"] for r in rows] == [300, 300]
    assert rows[0]["clean_accuracy"] == pytest.approx(accuracy(fn, x, y))
    assert rows[1]["robust_accuracy"] < rows[0]["robust_accuracy"] < rows[0]["clean_accuracy"]
    assert all(r["max_perturbation"] <= r["eps"] + 1e-6 for r in rows)
    assert all(r["outside_unit_range"] <= 0.0 for r in rows)


def test_bad_eps_and_attack_are_refused():
    with pytest.raises(ValueError, match="eps=1.5"):
        attacks.check_eps(1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        robust_accuracy(lambda v, x: x, None, [], [0.0], "pgd")
    with pytest.raises(ValueError, match="fgsm or pgd"):
        robust_accuracy(lambda v, x: x, None, [], [0.1], "cw")


def test_pixel_model_folds_in_the_models_uint8_scaling():
    pixels = np.arange(0, 256, 5, dtype=np.uint8).reshape(1, -1)
    model = MLP(num_outputs=3, hidden=(4,))
    params = model.init(jax.random.key(0), pixels)
    fn = attacks.pixel_model(lambda v: model.apply(params, v), "uint8")
    np.testing.assert_allclose(fn(jnp.asarray(pixels, jnp.float32) / 255.0),
                               model.apply(params, pixels), rtol=1e-5, atol=1e-5)
