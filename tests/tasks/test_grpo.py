"""task=grpo: advantages and the loss against NumPy, rewards, rollouts through the one decoder
(a function of seed and step; a row's tokens the same alone or in a batch), the rollout batch
kept for mu steps, a toy task learned, and a killed run resumed to the same rewards."""

import json
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data import arithmetic
from lmjax.eval import rewards
from lmjax.tasks import make_task
from lmjax.tasks.grpo import GRPOTask, ROLLOUTS, group_advantages, policy_loss, row_keys, sample
from lmjax.tasks.policy import REFERENCE

QUIET = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def add_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("add")
    arithmetic.write(str(d), val=32)
    return d


@pytest.fixture
def grpo_config(load_config, add_dir):
    c = load_config("tiny", "grpo.py")
    c.data.update(train_file=str(add_dir / "train.jsonl"), val_file=str(add_dir / "val.jsonl"),
                  tokenizer_file=str(add_dir / "tokenizer.json"))
    c.log.tensorboard = False
    return c


def _numpy_grpo(rewards, group, logps, old, ref, mask, eps, beta, norm, scale=True):
    r = rewards.reshape(-1, group)
    adv = r - r.mean(1, keepdims=True)
    if scale:
        adv = adv / (r.std(1, keepdims=True) + 1e-4)
    adv = adv.reshape(-1)
    ratio = np.exp(logps - old)
    a = adv[:, None]
    pg = -np.minimum(ratio * a, np.clip(ratio, 1 - eps, 1 + eps) * a)
    q = ref - logps
    kl = np.exp(q) - q - 1
    tok = pg + beta * kl
    if norm == "sequence":
        loss = ((tok * mask).sum(1) / mask.sum(1)).mean()
    elif norm == "token":
        loss = (tok * mask).sum() / mask.sum()
    else:
        loss = (tok * mask).sum() / mask.size
    clipped = ((ratio < 1 - eps) & (a < 0)) | ((ratio > 1 + eps) & (a > 0))
    return adv, loss, (kl * mask).sum() / mask.sum(), (clipped * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm", ["sequence", "token", "constant"])
def test_advantages_and_loss_equal_numpy_on_fixed_rollouts(norm):
    rng = np.random.default_rng(1)
    group, rows, t = 4, 8, 6
    scores = rng.integers(0, 3, size=rows).astype(np.float64)
    scores[4:] = 1.0  # a group whose samples all score alike: no signal, advantage 0
    logps = -rng.random((rows, t)) * 3
    old = logps + rng.normal(size=(rows, t)) * 0.3  # ratios on both sides of the clip range
    ref = logps + rng.normal(size=(rows, t)) * 0.5
    mask = (np.arange(t)[None] < rng.integers(1, t + 1, size=rows)[:, None]).astype(float)
    eps, beta = 0.2, 0.05
    adv, want, want_kl, want_clip = _numpy_grpo(scores, group, logps, old, ref, mask, eps, beta,
                                                norm)
    got_adv = group_advantages(jnp.asarray(scores, jnp.float32), group)
    np.testing.assert_allclose(got_adv, adv, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got_adv)[4:] == 0)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    loss, metrics = policy_loss(f32(logps), f32(old), f32(ref), got_adv, f32(mask),
                                epsilon=eps, beta=beta, norm=norm)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), want_kl, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["clip_fraction"]), want_clip, rtol=1e-6)
    assert 0 < want_clip < 1
    # Dr. GRPO's advantages: centred, not scaled.
    np.testing.assert_allclose(group_advantages(f32(scores), group, scale=False),
                               _numpy_grpo(scores, group, logps, old, ref, mask, eps, beta,
                                           norm, scale=False)[0], atol=1e-6)
    # beta 0: no KL term, no reference read.
    loss0, m0 = policy_loss(f32(logps), f32(old), None, got_adv, f32(mask), epsilon=eps,
                            beta=0.0, norm=norm)
    assert "kl" not in m0
    np.testing.assert_allclose(float(loss0), _numpy_grpo(scores, group, logps, old, ref, mask,
                                                         eps, 0.0, norm)[1], rtol=1e-5)


def test_the_policy_gradient_with_one_update_per_rollout_batch():
    """mu = 1: the ratio is 1 and its gradient is the advantage-weighted score function,
    A / n_tokens per completion token (sequence normalisation)."""
    logps = jnp.asarray([[-1.0, -2.0, -0.5], [-0.3, -0.2, -4.0]])
    mask = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = jnp.asarray([0.7, -0.7])
    grad = jax.grad(lambda lp: policy_loss(lp, jax.lax.stop_gradient(lp), None, adv, mask,
                                           epsilon=0.2, beta=0.0, norm="sequence")[0])(logps)
    want = -(adv[:, None] * mask / mask.sum(1, keepdims=True)) / 2
    np.testing.assert_allclose(grad, want, rtol=1e-6)


def score(prompt, completion, record):
    """A user's reward for the dotted-path test: the completion's length in characters."""
    return float(len(completion))


def test_rewards_builtin_and_by_dotted_path(monkeypatch, tmp_path):
    rec = {"prompt": "What is 40+2?", "response": "42", "answers": ["42", "forty-two"]}
    assert rewards.load("exact_match")("", " The 42. ", rec) == 1.0  # SQuAD's normalisation
    assert rewards.load("exact_match")("", "42 apples", rec) == 0.0
    assert rewards.load("exact_match")("", "Forty-two", rec) == 1.0
    assert rewards.load("numeric")("", "it is 42.0 exactly", rec) == 1.0
    assert rewards.load("numeric")("", "it is 41", rec) == 0.0
    assert rewards.load("numeric")("", "no number", rec) == 0.0
    assert rewards.load("numeric")("", "1,024", {"response": "1024"}) == 1.0
    fmt = rewards.load("format", pattern=r"\d+")
    assert fmt("", " 42\n", rec) == 1.0 and fmt("", "42 apples", rec) == 0.0
    assert rewards.load("numeric,format", pattern=r"\d+")("", "42", rec) == 2.0
    (tmp_path / "my_rewards.py").write_text(
        "def score(prompt, completion, record):\n    return len(prompt) + len(completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert rewards.load("my_rewards:score")("ab", "cde", rec) == 5.0
    for spec, match in (("nope", "neither a built-in"), ("my_rewards:absent", "cannot import"),
                        ("format", "rl.format_pattern"), ("", "rl.reward is empty")):
        with pytest.raises(ValueError, match=match):
            rewards.load(spec)


def _setup(cfg):
    from lmjax.train.setup import setup

    cfg.mesh.data = 1
    return setup(cfg, log=lambda s: None)


def test_rollouts_come_from_the_one_decoder_as_a_function_of_seed_and_step(grpo_config):
    task = make_task(grpo_config, **QUIET)
    params = nn.meta.unbox(jax.jit(task.init_variables)(jax.random.PRNGKey(0)))["params"]
    batch = {k: jnp.asarray(v) for k, v in task.train_batch(5).items()}
    g = grpo_config.rl.num_generations
    assert batch["prompt"].shape == (grpo_config.train.batch_size, task.prompt_length)
    np.testing.assert_array_equal(batch["record"].reshape(-1, g),
                                  np.repeat(batch["record"][::g, None], g, 1))
    roll = jax.jit(lambda p, b, k: task.rollout(p, b, k, 1.0))
    key = jax.random.fold_in(jax.random.PRNGKey(0), 5)
    tokens, scores, lengths = roll(params, batch, key)
    again = roll(params, {k: jnp.asarray(v) for k, v in task.train_batch(5).items()}, key)
    np.testing.assert_array_equal(tokens, again[0])
    other = roll(params, batch, jax.random.fold_in(jax.random.PRNGKey(0), 6))[0]
    assert not np.array_equal(tokens, other)
    assert len(set(map(tuple, np.asarray(tokens)[:g]))) > 1  # a group's samples differ
    # A row sampled alone gets the tokens it got in the batch (per-row keys).
    keys = row_keys(key, len(tokens))
    for i in (0, 3):
        alone = sample(task.plain, params, batch["prompt"][i:i + 1], batch["start"][i:i + 1],
                       keys[i:i + 1], task.stops, 1.0, new_tokens=task.new_tokens)
        np.testing.assert_array_equal(alone[0], tokens[i])
    # The host scores the text up to the stop string; the length counts its tokens.
    text = task.text.tokenizer.decode(np.asarray(tokens[0]).tolist())
    assert lengths[0] == task.new_tokens or "\n\n" in text
    assert set(np.asarray(scores).tolist()) <= {0.0, 1.0}


def test_completion_length_ends_with_the_stop_string(grpo_config):
    task = make_task(grpo_config, **QUIET)
    tok = task.text.tokenizer
    rows = np.stack([tok.encode("42\n\n12"), tok.encode("424242"), tok.encode("7\n\n123")])
    task.data  # noqa: B018 (the records the host scores against)
    task.data["train_records"][:3] = [{"prompt": "a", "response": "42"},
                                      {"prompt": "b", "response": "4242"},
                                      {"prompt": "c", "response": "8"}]
    scores, lengths = task._score_host("train", rows, np.arange(3))
    # The stop string's tokens count (the policy learns to stop); a row that never stops is
    # cut at max_answer_tokens by the decoder, so all of it counts here.
    np.testing.assert_array_equal(lengths, [4, 6, 3])
    np.testing.assert_array_equal(scores, [1.0, 0.0, 0.0])


@pytest.mark.slow  # builds and differentiates a model
def test_a_decoder_family_policy_scores_its_completions_with_its_own_head(load_config,
                                                                          tmp_path):
    # configs/grpo.py's released-shape preset (Qwen 3's block, untied here), made tiny, on
    # addition problems whose tokenizer is padded to the model's vocabulary.
    arithmetic.write(str(tmp_path), val=32, vocab_size=96)
    c = load_config("qwen3_0_6b", "grpo.py")
    c.model.update(num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16, d_model=32,
                   mlp_dim=64, block_size=64, vocab_size=96, tie_embeddings=False,
                   dtype="float32", scan_layers=False, remat="none")
    c.sft.max_answer_tokens = 8
    c.train.batch_size = 8
    c.data.update(train_file=str(tmp_path / "train.jsonl"), val_file=str(tmp_path / "val.jsonl"),
                  tokenizer_file=str(tmp_path / "tokenizer.json"))
    task = make_task(c, **QUIET)
    params = nn.meta.unbox(jax.jit(task.init_variables)(jax.random.PRNGKey(0)))["params"]
    assert "lm_head" in params and "wte" not in params
    batch = {k: jnp.asarray(v) for k, v in task.train_batch(0).items()}
    tokens, _, _ = task.rollout(params, batch, jax.random.PRNGKey(1), 1.0)
    ro = {"tokens": jnp.concatenate([batch["prompt"], tokens], axis=1)}
    ro["segment_ids"] = jnp.ones(ro["tokens"][:, :-1].shape, jnp.int32)
    got = task.completion_logps(task.plain, params, ro)  # the last T positions' logits only
    logits = task.plain.apply({"params": params}, ro["tokens"][:, :-1])[:, -task.new_tokens:]
    want = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # the loss and rollouts keep fast tests; this one compiles two steps
def test_beta_zero_keeps_no_reference_and_mu_keeps_the_rollout_batch(grpo_config):
    grpo_config.rl.beta = 0.0
    variables = jax.eval_shape(make_task(grpo_config, **QUIET).init_variables,
                               jax.random.PRNGKey(0))
    assert REFERENCE not in variables and ROLLOUTS not in variables
    grpo_config.rl.update(beta=0.04, mu=2)
    s = _setup(grpo_config)
    state = s.new_state()
    assert set(state.model_state) == {REFERENCE, ROLLOUTS}
    step = s.train_step()
    seen = []
    for i in range(4):
        batch = {k: jnp.asarray(v) for k, v in s.task.train_batch(i).items()}
        assert bool(batch["fresh"][0]) == (i % 2 == 0)
        state, _ = step(state, batch)
        seen.append(np.asarray(state.model_state[ROLLOUTS]["tokens"]))
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[2], seen[3])
    assert not np.array_equal(seen[1], seen[2])


def test_bad_settings_name_the_field(grpo_config):
    for field, value, match in (("num_generations", 1, "rl.num_generations=1"),
                                ("loss_norm", "mean", "rl.loss_norm='mean'"),
                                ("reward", "nope", "neither a built-in"),
                                ("prompt_length", 64, "rl.prompt_length=64")):
        c = grpo_config.copy_and_resolve_references()
        c.rl[field] = value
        with pytest.raises(ValueError, match=match):
            make_task(c, **QUIET)
    grpo_config.train.batch_size = 6
    with pytest.raises(ValueError, match="multiple of rl.num_generations=4"):
        make_task(grpo_config, **QUIET)


def _train_rewards(workdir) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["reward"] for r in rows if r["split"] == "train"}


@pytest.fixture
def toy_config(grpo_config):
    """From random weights, the reward 1 when the completion ends with '7' (format regex):
    learned from a few lucky samples (about 1 in 26 at first)."""
    grpo_config.rl.update(reward="format", format_pattern=".*7", num_generations=4)
    grpo_config.train.update(batch_size=32, log_every=1, eval_every=1000, eval_examples=16)
    grpo_config.optim.update(learning_rate=1e-2, warmup_steps=2, schedule="constant")
    grpo_config.sft.eval_questions = 0
    grpo_config.mesh.data = 1
    return grpo_config


@pytest.mark.slow
def test_a_tiny_model_learns_to_end_its_answers_with_a_seven(toy_config, tmp_path):
    toy_config.train.num_steps = 30
    from lmjax.train.loop import train_and_evaluate

    out = train_and_evaluate(toy_config, str(tmp_path / "toy"))
    curve = _train_rewards(tmp_path / "toy")
    first, last = np.mean([curve[s] for s in range(1, 6)]), np.mean([curve[s] for s in
                                                                    range(26, 31)])
    assert first < 0.3 and last > 0.7, curve
    assert out["val_reward"] > 0.7  # greedy completions on the held-out prompts


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_same_rewards(toy_config, tmp_path, monkeypatch):
    """Killed mid-way through a rollout batch (mu=2, the checkpoint at step 3 holds the batch
    that step 4 reuses), the same command resumes to the uninterrupted run's rewards."""
    from lmjax.train import loop

    toy_config.rl.mu = 2
    toy_config.train.num_steps = 8
    toy_config.checkpoint.every = 3
    # No prefetching: the batch of step 4 is then built after step 3 ran, so the SIGTERM lands
    # at a known step (a prefetch thread builds it while step 2 runs, in CI too).
    toy_config.data.prefetch = 0
    whole = loop.train_and_evaluate(toy_config, str(tmp_path / "whole"))
    build = GRPOTask.train_batch

    def build_then_sigterm(self, step, *args):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return build(self, step, *args)

    monkeypatch.setattr(GRPOTask, "train_batch", build_then_sigterm)
    with pytest.raises(loop.Preempted) as stopped:
        loop.train_and_evaluate(toy_config, str(tmp_path / "cut"))
    monkeypatch.undo()
    assert 3 <= stopped.value.args[0] < 8
    resumed = loop.train_and_evaluate(toy_config, str(tmp_path / "cut"))
    assert _train_rewards(tmp_path / "cut") == _train_rewards(tmp_path / "whole")
    assert resumed["val_reward"] == whole["val_reward"]
