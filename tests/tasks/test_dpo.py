"""task=dpo: the loss and its gradient against NumPy, the reference (frozen copy, or the model
with its LoRA adapters off), preference records, and a run from the command line."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data import arithmetic, preferences
from lmjax.data import sft as sft_data
from lmjax.models.gpt import GPT
from lmjax.tasks import make_task
from lmjax.tasks.dpo import answer_logps, pair_metrics
from lmjax.tasks.policy import REFERENCE, token_logps

QUIET = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """Addition problems as preference pairs (chosen: the sum, rejected: the sum plus one), and
    the character tokenizer they are encoded with."""
    d = tmp_path_factory.mktemp("pairs")
    arithmetic.write(str(d), val=16)
    with open(d / "train.jsonl") as f:
        recs = [json.loads(line) for line in f][:48]
    with open(d / "pairs.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps({"prompt": r["prompt"], "chosen": r["response"],
                                "rejected": str(int(r["response"]) + 1)}) + "\n")
    return d


@pytest.fixture
def dpo_config(load_config, pairs_dir):
    c = load_config("tiny", "dpo.py")
    c.data.update(train_file=str(pairs_dir / "pairs.jsonl"), val_fraction=0.25,
                  tokenizer_file=str(pairs_dir / "tokenizer.json"))
    c.log.tensorboard = False
    return c


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _numpy_dpo(logits, ref_logits, targets, weights, beta, loss):
    """Loss (mean over pairs) and its gradient in the policy's logits, written out: rows are
    the chosen answers, then the rejected ones."""
    n = len(targets) // 2
    onehot = np.eye(logits.shape[-1])[targets]
    count = weights.sum(-1)
    scale = 1 / count if loss == "ipo" else np.ones_like(count)
    lp = (_log_softmax(logits) * onehot).sum(-1)
    rlp = (_log_softmax(ref_logits) * onehot).sum(-1)
    pol, ref = (lp * weights).sum(-1) * scale, (rlp * weights).sum(-1) * scale
    h = (pol[:n] - pol[n:]) - (ref[:n] - ref[n:])
    if loss == "sigmoid":
        value = np.log1p(np.exp(-beta * h))
        dh = -beta / (1 + np.exp(beta * h))
    else:
        value = (h - 1 / (2 * beta)) ** 2
        dh = 2 * (h - 1 / (2 * beta))
    dpol = np.concatenate([dh, -dh]) / n * scale  # d mean / d log p(answer row)
    probs = np.exp(_log_softmax(logits))
    grad = dpol[:, None, None] * weights[..., None] * (onehot - probs)
    return value.mean(), grad


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_loss_and_gradient_equal_numpy_on_fixed_logits(loss):
    rng = np.random.default_rng(0)
    rows, length, vocab = 6, 5, 7  # 3 pairs
    logits = rng.normal(size=(rows, length, vocab)) * 2
    ref_logits = rng.normal(size=(rows, length, vocab)) * 2
    targets = rng.integers(0, vocab, size=(rows, length))
    weights = (rng.random((rows, length)) < 0.6).astype(np.float64)
    weights[:, -1] = 1  # every answer has a token
    beta = 0.3

    def fn(x):
        average = loss == "ipo"
        pol = answer_logps(token_logps(x, targets), weights, average).reshape(2, -1)
        ref = answer_logps(token_logps(jnp.asarray(ref_logits, jnp.float32), targets), weights,
                           average).reshape(2, -1)
        return pair_metrics(pol, ref, beta, loss)["loss"].mean()

    value, grad = jax.value_and_grad(fn)(jnp.asarray(logits, jnp.float32))
    want, want_grad = _numpy_dpo(logits, ref_logits, targets, weights, beta, loss)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, atol=1e-6, rtol=1e-4)


def _variables(task, seed=0):
    return nn.meta.unbox(jax.jit(task.init_variables)(jax.random.PRNGKey(seed)))


def _batch(task, step=0):
    return {k: jnp.asarray(v) for k, v in task.train_batch(step).items()}


def test_only_the_policy_gets_gradients_and_the_reference_is_the_first_step(dpo_config):
    task = make_task(dpo_config, **QUIET)
    variables = _variables(task)
    params, reference = variables["params"], variables[REFERENCE]["params"]
    assert not bool(variables[REFERENCE]["ready"])
    batch = _batch(task)

    def loss(p, ref, ready):
        state = {REFERENCE: {"params": ref, "ready": ready}}
        return task.loss(p, state, batch, jax.random.PRNGKey(0))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (value, (aux, new_state)), (g_policy, _) = grad(params, reference, jnp.zeros((), bool))
    # Before the first step the reference is the policy: every reward is 0, the loss log 2
    # and a tie counts one half. The step fixes the reference at these parameters.
    assert float(value) == pytest.approx(np.log(2), rel=1e-6)
    assert float(aux["reward_accuracy"]) == 0.5 and float(aux["reward_margin"]) == 0.0
    assert bool(new_state[REFERENCE]["ready"])
    jax.tree.map(np.testing.assert_array_equal, new_state[REFERENCE]["params"], params)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_policy)) > 0
    # A fixed reference: the loss depends on it, yet it gets no gradient.
    moved = jax.tree.map(lambda x: x * 1.1, params)
    (value2, _), (_, g_ref) = grad(params, moved, jnp.ones((), bool))
    assert float(value2) != pytest.approx(float(value))
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(g_ref))


@pytest.mark.slow  # DPO's core (policy gradients, a frozen reference) stays fast
def test_with_lora_the_reference_is_the_base_model(dpo_config):
    dpo_config.lora.rank = 4
    task = make_task(dpo_config, **QUIET)
    variables = _variables(task)
    assert REFERENCE not in variables  # no second copy of the weights
    params = variables["params"]
    # Adapters that change the model (qwix starts B at zero).
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.3 if str(p[-1].key).endswith("_lora_b") else x, params)
    batch = _batch(task)
    base = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros_like(x) if str(p[-1].key).endswith("_lora_b") else x, params)
    both = {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])
            for k in ("inputs", "targets", "loss_weights", "segment_ids")}

    def logps(model, p):
        logits = model.apply({"params": p}, both["inputs"], segment_ids=both["segment_ids"])
        return answer_logps(token_logps(logits, both["targets"]), both["loss_weights"], False)

    plain = GPT(task.model_config)
    adapted, reference = logps(task.model, params), logps(plain, params)
    np.testing.assert_allclose(reference, logps(task.model, base), rtol=1e-5)
    assert float(jnp.abs(adapted - reference).max()) > 1e-3
    per_pair = task.pairs(params, {}, batch)
    want = 0.1 * (adapted - reference).reshape(2, -1)
    np.testing.assert_allclose(per_pair["chosen_reward"], want[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(per_pair["rejected_reward"], want[1], rtol=1e-4, atol=1e-6)


def test_preference_records_in_trls_shapes_count_only_the_answer():
    tok = arithmetic.tokenizer()
    template, end = sft_data.DEFAULT_TEMPLATE, sft_data.DEFAULT_END
    text = {"prompt": "1+2", "chosen": "3", "rejected": "4"}
    chat = {"prompt": [{"role": "user", "content": "1+2"}],
            "chosen": [{"role": "assistant", "content": "3"}],
            "rejected": [{"role": "assistant", "content": "4"}]}
    implicit = {"chosen": chat["prompt"] + chat["chosen"],
                "rejected": chat["prompt"] + chat["rejected"]}
    for record in (text, chat, implicit):
        chosen, rejected = preferences.encode(tok, record, template, end, 64)
        assert tok.decode(chosen.tokens[chosen.loss]) == "3" + end
        assert tok.decode(rejected.tokens[rejected.loss]) == "4" + end
        assert tok.decode(chosen.tokens[~chosen.loss]) == "Question: 1+2\nAnswer: "
        assert sft_data.format_prompt(template, "1+2") in tok.decode(chosen.tokens)
    assert preferences.as_qa(text) == {"prompt": "1+2", "response": "3"}
    assert preferences.as_qa(chat) == {"messages": chat["prompt"] + chat["chosen"]}
    with pytest.raises(sft_data.SFTDataError, match="'prompt', 'chosen' and 'rejected'"):
        preferences.encode(tok, {"prompt": "1+2", "chosen": "3"}, template, end, 64)
    with pytest.raises(sft_data.SFTDataError, match="differ only in their last message"):
        preferences.encode(tok, {"chosen": implicit["chosen"],
                                 "rejected": [{"role": "user", "content": "2+2"}] +
                                 chat["rejected"]}, template, end, 64)


def test_bad_settings_name_the_field(dpo_config):
    dpo_config.dpo.loss = "hinge"
    with pytest.raises(ValueError, match="dpo.loss='hinge'"):
        make_task(dpo_config, **QUIET)
    dpo_config.dpo.loss, dpo_config.dpo.beta = "ipo", 0.0
    with pytest.raises(ValueError, match="dpo.beta=0.0"):
        make_task(dpo_config, **QUIET)


@pytest.mark.slow
def test_dpo_trains_from_the_command_line_and_serves_like_any_run(dpo_config, pairs_dir,
                                                                 run_module, tmp_path):
    """lmjax train trains (a run extended from 15 to 30 steps resumes at 15), the reward
    accuracy on all 48 training pairs rises above chance and the margin grows, and the run
    generates and converts. (A tiny model from scratch, 30 steps: 0.625 -> 0.75 on 2026-12-06;
    the accuracy the issue asks for is docs/posttraining.md's run.)"""
    work = tmp_path / "dpo"
    common = ["--config=configs/dpo.py:tiny", f"--workdir={work}",
              f"--config.data.train_file={pairs_dir / 'pairs.jsonl'}",
              f"--config.data.val_file={pairs_dir / 'pairs.jsonl'}",
              f"--config.data.tokenizer_file={pairs_dir / 'tokenizer.json'}",
              "--config.train.eval_every=15", "--config.checkpoint.every=15",
              "--config.optim.learning_rate=3e-3", "--config.log.tensorboard=False",
              "--config.train.eval_examples=0"]  # 0: every pair, not tiny's 8
    first = run_module("train", *common, "--config.train.num_steps=15")
    assert first.returncode == 0, first.stderr[-2000:]
    done = run_module("train", *common, "--config.train.num_steps=30")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resumed from step 15" in done.stdout + done.stderr
    evals = [json.loads(line) for line in open(work / "metrics.jsonl")]
    val = [r for r in evals if r["split"] == "val"]
    assert val[-1]["reward_accuracy"] > 0.6
    assert val[-1]["reward_margin"] > val[0]["reward_margin"] > 0
    gen = run_module("generate", f"--workdir={work}", "--prompt=12+30",
                     "--max_new_tokens=4")
    assert gen.returncode == 0, gen.stderr[-2000:]
    out = tmp_path / "hf"
    conv = run_module("convert", "to_hf", f"--workdir={work}", f"--out={out}")
    assert conv.returncode == 0, conv.stderr[-2000:]
    assert os.path.exists(out / "config.json")
