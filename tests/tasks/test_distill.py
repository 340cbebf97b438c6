"""Knowledge distillation: the soft loss against a NumPy reference, the mixed loss of a student
(MLP) from a teacher run (CNN) recomputed independently, and teachers that must be refused."""

from types import SimpleNamespace

import jax
import ml_collections
import numpy as np
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.tasks import add_switches, make_task
from lmjax.tasks.distill import check_compatible, soft_loss
from lmjax.train.restore import load_setup


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_soft(s, t, temp):
    ls, lt = np_log_softmax(s / temp), np_log_softmax(t / temp)
    return temp ** 2 * (np.exp(lt) * (lt - ls)).sum(-1)


def test_soft_loss_is_t_squared_kl():
    r = np.random.default_rng(0)
    s, t = r.normal(size=(6, 10)) * 3, r.normal(size=(6, 10)) * 3
    for temp in (1.0, 4.0):
        np.testing.assert_allclose(soft_loss(s, t, temp), np_soft(s, t, temp), rtol=1e-5,
                                   atol=1e-6)
    assert float(soft_loss(t, t, 4.0).max()) == pytest.approx(0.0, abs=1e-6)


def _stub(task, **kw):
    return SimpleNamespace(cfg=ml_collections.ConfigDict({"task": task}), **kw)


def test_refuses_teachers_with_other_classes_or_vocabulary():
    with pytest.raises(ValueError, match="classes"):
        check_compatible(_stub("classify", class_names=["a", "b"]),
                         _stub("classify", class_names=["a", "c"]))
    with pytest.raises(ValueError, match="cannot teach"):
        check_compatible(_stub("classify", class_names=["a"]), _stub("lm"))
    with pytest.raises(ValueError, match="vocabulary"):
        check_compatible(_stub("lm", tokenizer=CharTokenizer("?abc"), seq_len=8),
                         _stub("lm", tokenizer=CharTokenizer("?abd"), seq_len=8))
    check_compatible(_stub("lm", tokenizer=CharTokenizer("?ab"), seq_len=8),
                     _stub("lm", tokenizer=CharTokenizer("?ab"), seq_len=16))


@pytest.mark.slow
def test_mlp_student_loss_mixes_cnn_teacher_soft_targets(fashion_config, load_config,
                                                         fashion_dir, save_untrained, tmp_path):
    teacher_dir = str(tmp_path / "teacher")
    save_untrained(fashion_config, teacher_dir)

    student = load_config("mlp", "fashion_mnist.py")
    student.data.update(dir=fashion_dir, val_size=100)
    student.model.update(hidden=(16,), dropout=0.0)
    add_switches(student, "distill").distill.update(teacher=teacher_dir, temperature=3.0, alpha=0.7)
    task = make_task(student, log=lambda s: None)
    params = task.init_variables(jax.random.PRNGKey(1))["params"]
    batch = task.train_batch(0)
    loss, (aux, _) = task.loss(params, {}, batch, jax.random.PRNGKey(2))

    s, t_state = load_setup(teacher_dir)  # the teacher, loaded the usual way
    t_logits = np.asarray(s.task.model.apply({"params": t_state.params, **t_state.model_state},
                                             batch["inputs"]))
    s_logits = np.asarray(task.model.apply({"params": params}, batch["inputs"]))
    soft = np_soft(s_logits, t_logits, 3.0).mean()
    onehot = np.eye(10)[batch["labels"]] * (1 - 0.1) + 0.1 / 10  # label smoothing 0.1
    hard = -(onehot * np_log_softmax(s_logits)).sum(-1).mean()
    assert float(aux["soft_loss"]) == pytest.approx(soft, rel=1e-4)
    assert float(aux["hard_loss"]) == pytest.approx(hard, rel=1e-4)
    assert float(loss) == pytest.approx(0.7 * soft + 0.3 * hard, rel=1e-4)

    bad = load_config("mlp", "fashion_mnist.py")
    bad.data.update(dir=fashion_dir, val_size=100)
    add_switches(bad, "distill").distill.teacher = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not a run directory"):
        make_task(bad, log=lambda s: None)
