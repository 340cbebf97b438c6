"""Knowledge distillation (Hinton et al., 2015): a student trained on a teacher run's soft targets.

`distill.teacher=<run>` wraps any classify or lm task: the loss becomes

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * hard loss

where the hard loss is the task's own (label smoothing and class weights included). T^2 keeps
the soft gradients' scale independent of T. The teacher's frozen parameters are constants of
the jitted train step, which computes its logits on the same (augmented) inputs as the
student's; the student may be of another family (an MLP from a CNN, a 2-layer GPT from a
4-layer one), but must predict the same classes or the same vocabulary. Evaluation, checkpoints
and the run directory are the student's alone: a distilled run loads like any other.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from lmjax import rundir
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.config import from_stored, require
from lmjax.tasks import make_task
from lmjax.tasks.assets import read_assets
from lmjax.tasks.classification import classification_loss
from lmjax.tasks.wrapper import TaskWrapper

FAMILIES = ("classify", "lm")
SECTION = "distill"
STATE_DEFINING = {}  # the student's state is an ordinary run's


def section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.teacher = ""                 # a run directory; '' : no distillation
    d.temperature = 4.0
    d.alpha = 0.9                  # weight of the soft loss (1 - alpha: the hard loss)
    return d


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return bool(cfg.distill.teacher)


def check(cfg: ml_collections.ConfigDict) -> None:
    d = cfg.distill
    require(d.temperature > 0, f"distill.temperature={d.temperature}: must be positive.")
    require(0.0 <= d.alpha <= 1.0, f"distill.alpha={d.alpha}: the weight of the soft loss, "
            "in [0, 1].")
    require(not d.teacher or cfg.task in FAMILIES, f"distill.teacher: distillation works for "
            f"{' and '.join(FAMILIES)} runs, not task={cfg.task!r}.")
    require(not d.teacher or cfg.train.get("loss_chunk", 0) == 0,
            "distill.teacher with train.loss_chunk: the soft loss needs whole logits; set "
            "--config.train.loss_chunk=0.")


def soft_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float):
    """T^2 * KL(teacher || student) at temperature T, per example (last axis: the classes)."""
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
    return temperature ** 2 * (jnp.exp(t) * (t - s)).sum(-1)


def load_teacher(workdir: str, log=print):
    """(task, params, model_state) of the run in `workdir` (its best checkpoint if it kept one),
    on the host: no data read, whatever mesh trained it."""
    if not os.path.isdir(rundir.checkpoint_dir(workdir)):
        raise ValueError(f"distill.teacher={workdir!r}: not a run directory with checkpoints; "
                         "give the --workdir of a trained run.")
    directory = rundir.checkpoint_dir(workdir, best=rundir.has_best(workdir))
    assets = read_assets(workdir, log=log)
    host = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with Checkpointer(directory) as ckpt:
        step = ckpt.latest_step()
        if step is None:
            raise CheckpointError(f"distill.teacher={workdir!r}: no checkpoint in {directory}.")
        cfg = from_stored(ckpt.stored_config(step))
        # No target tree: the teacher's optimizer state is of no interest, and its structure
        # depends on how the teacher was trained; arrays land on one device whatever wrote them.
        state = ckpt.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(fallback_sharding=host)))["state"]
    task = make_task(cfg, assets=assets, log=log)
    to_host = lambda tree: jax.tree.map(np.asarray, tree)  # noqa: E731
    log(f"Distilling from {workdir} ({cfg.task}, step {step}).")
    return task, to_host(state["params"]), to_host(state.get("model_state") or {})


def check_compatible(student, teacher) -> None:
    """Same family, same classes or vocabulary: otherwise the soft targets mean nothing."""
    s_task, t_task = student.cfg.task, teacher.cfg.task
    if s_task not in FAMILIES or t_task != s_task:
        raise ValueError(f"distill.teacher: a {t_task!r} teacher cannot teach a {s_task!r} "
                         f"student; distillation works for {' and '.join(FAMILIES)} runs of "
                         "the same task.")
    if s_task == "classify":
        if list(student.class_names) != list(teacher.class_names):
            raise ValueError(f"distill.teacher: its classes {teacher.class_names} differ from "
                             f"the student's {student.class_names}; use a teacher trained on "
                             "the same labels.")
        return
    s_tok, t_tok = student.tokenizer, teacher.tokenizer
    s_vocab = [s_tok.decode([i]) for i in range(s_tok.vocab_size)]
    t_vocab = [t_tok.decode([i]) for i in range(t_tok.vocab_size)]
    if s_vocab != t_vocab:
        raise ValueError(f"distill.teacher: its vocabulary ({t_tok.vocab_size} tokens) differs "
                         f"from the student's ({s_tok.vocab_size}); train the student with the "
                         "teacher's tokenizer (--config.data.tokenizer_file=<teacher>/"
                         "tokenizer.json) on the same data settings.")
    if teacher.seq_len < student.seq_len:
        raise ValueError(f"distill.teacher: its context ({teacher.seq_len}) is shorter than the "
                         f"student's model.block_size={student.seq_len}.")


class DistillTask(TaskWrapper):
    def __init__(self, inner, section, log=print):
        super().__init__(inner)
        self.temperature, self.alpha = float(section.temperature), float(section.alpha)
        self.teacher_dir = section.teacher
        self.teacher, self.t_params, self.t_state = load_teacher(section.teacher, log)
        check_compatible(inner, self.teacher)

    def describe(self) -> str:
        return (f"{self.inner.describe()}; distilled from {self.teacher_dir} "
                f"(T={self.temperature:g}, alpha={self.alpha:g})")

    def _teacher_logits(self, inputs):
        if self.cfg.task == "classify":
            logits, _ = self.teacher._apply(self.t_params, self.t_state, inputs)
        else:
            logits = self.teacher.model.apply({"params": self.t_params}, inputs,
                                              deterministic=True)
        return jax.lax.stop_gradient(logits)

    def loss(self, params, model_state, batch, rng):
        inner = self.inner
        if self.cfg.task == "classify":
            inputs = inner._augment(batch, rng)
            logits, model_state = inner._apply(params, model_state, inputs, rng)
            hard, accuracy = classification_loss(logits, batch["labels"], inner.weights,
                                                 self.cfg.train.get("label_smoothing", 0.0))
            aux = {"accuracy": accuracy}
        else:
            inputs = batch["inputs"]
            logits = inner.model.apply({"params": params}, inputs, deterministic=False,
                                       rngs={"dropout": rng})
            hard = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), batch["targets"]).mean()
            aux = {}
        soft = soft_loss(logits, self._teacher_logits(inputs), self.temperature).mean()
        aux.update(hard_loss=hard, soft_loss=soft)
        return self.alpha * soft + (1.0 - self.alpha) * hard, (aux, model_state)


def wrap(task, cfg, assets=None, log=print, mesh=None):
    """The distilling task when it trains (a loaded run, with `assets`, is the student alone)."""
    return task if assets is not None else DistillTask(task, cfg.distill, log)
