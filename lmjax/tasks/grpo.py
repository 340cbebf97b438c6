"""Group relative policy optimisation (GRPO; Shao et al., 2024) of a GPT with verifiable rewards.

Each step takes `train.batch_size / rl.num_generations` prompts (JSONL records or the QA set,
through the run's SFT template) and:

1. samples G = rl.num_generations completions of each through the one decoder
   (lmjax/models/decoding.py: prefill, then the jitted while_loop; all G x prompts rows in one
   batch, each row with its own key), up to sft.max_answer_tokens tokens, cut at sft.stop;
2. scores each completion on the host (lmjax/eval/rewards.py: exact match, a numeric answer, a
   format regex, or a user's function), and normalises the rewards within each group:
   A = (r - mean) / (std + 1e-4), or r - mean with rl.scale_rewards=False (Dr. GRPO);
3. updates the policy with PPO's clipped ratio and a KL penalty to the reference (the k3
   estimator exp(q) - q - 1, q = log ref - log pi; rl.beta=0 drops the reference):
   per token  -min(rho A, clip(rho, 1 - eps, 1 + eps) A) + beta * k3,
   averaged per sequence then over sequences (rl.loss_norm='sequence', GRPO), over every
   completion token of the batch ('token', DAPO), or summed and divided by rows x
   max_answer_tokens ('constant', Dr. GRPO).

Rollouts run INSIDE the jitted train step, through the decoder's jittable functions, with the
parameters the step updates: the prefetcher only builds prompt ids ahead (a pure function of
(seed, step)), so it can never sample with stale weights, and the sampling keys are
fold_in(fold_in(seed key, step), row), so a resumed run draws the same completions. Rewards are
Python: they run through `jax.pure_callback` from the step. With rl.mu > 1 a rollout batch
serves mu consecutive steps (PPO's inner updates): its tokens, advantages, and its old and
reference log-probabilities live in the model state (`model_state['rollouts']`), so they are
checkpointed and a resume mid-way through the mu steps goes on exactly. With mu = 1 the old
policy is the current one (rho = 1, its gradient the policy gradient).

Logged each step: reward mean and spread (std over the batch), KL, completion length, clip
fraction. Each evaluation decodes the validation prompts greedily and reports their mean reward
(the validation "loss" is minus that reward, so early stopping on loss keeps the best policy).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax import rundir
from lmjax.config import require
from lmjax.data import sft as sft_data
from lmjax.eval import rewards as rewards_lib
from lmjax.models import decoding as dec
from lmjax.models import lora
from lmjax.models.generator import Completion, Generator, Request
from lmjax.parallel.mesh import local_rows
from lmjax.tasks.base import Task, epoch_indices, padded_batches
from lmjax.tasks.policy import PolicyTask

LOSS_NORMS = ("sequence", "token", "constant")
ROLLOUTS = "rollouts"  # the model-state collection holding a rollout batch (rl.mu > 1)


def group_advantages(rewards: jax.Array, group: int, scale: bool = True) -> jax.Array:
    """Each reward minus its group's mean (consecutive rows of `group`), divided by the group's
    standard deviation (+1e-4) when `scale`."""
    r = rewards.reshape(-1, group)
    centred = r - r.mean(-1, keepdims=True)
    if scale:
        centred = centred / (r.std(-1, keepdims=True) + 1e-4)
    return centred.reshape(-1)


def policy_loss(logps: jax.Array, old_logps: jax.Array, ref_logps: jax.Array | None,
                advantages: jax.Array, mask: jax.Array, *, epsilon: float, beta: float,
                norm: str) -> tuple[jax.Array, dict]:
    """GRPO's loss over completion tokens (rows, T) and its diagnostics (see the module
    docstring). `ref_logps` is unused when beta is 0."""
    ratio = jnp.exp(logps - old_logps)
    adv = advantages[:, None]
    per_token = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - epsilon, 1 + epsilon) * adv)
    tokens = jnp.maximum(mask.sum(), 1.0)
    metrics = {}
    if beta > 0:
        q = ref_logps - logps
        kl = jnp.exp(q) - q - 1
        per_token = per_token + beta * kl
        metrics["kl"] = (kl * mask).sum() / tokens
    if norm == "sequence":
        loss = ((per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)).mean()
    elif norm == "token":
        loss = (per_token * mask).sum() / tokens
    else:
        loss = (per_token * mask).sum() / mask.size
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    metrics["clip_fraction"] = (clipped * mask).sum() / tokens
    return loss, metrics


@functools.partial(jax.jit, static_argnames=("model", "new_tokens"))
def sample(model, params, prompt: jax.Array, start: jax.Array, keys: jax.Array,
           stops: jax.Array, temperature, *, new_tokens: int) -> jax.Array:
    """`new_tokens` sampled tokens (rows, new_tokens) after left-padded prompts (rows, P) (row
    b's begins at start[b]), each row with its own key (rows, 2) at `temperature` (0: greedy),
    through the one decoder. Rows end at the stop sequences `stops` (K, L) or the limit; tokens
    after a row's end are whatever the loop wrote (the caller masks them)."""
    rows, plen = prompt.shape
    sampling = dec.Sampling(temperature=jnp.full((rows,), temperature, jnp.float32),
                            top_k=jnp.zeros((rows,), jnp.int32),
                            top_p=jnp.ones((rows,), jnp.float32), keys=keys,
                            offset=jnp.zeros((rows,), jnp.int32))
    state = dec.begin(model, params, prompt, start, jnp.full((rows,), new_tokens, jnp.int32),
                      jnp.broadcast_to(stops, (rows,) + stops.shape), sampling,
                      slots=plen + new_tokens)
    first = state.last[:, None]
    if new_tokens == 1:
        return first
    _, rest, _ = dec.decode(model, params, state, jnp.asarray(new_tokens - 1, jnp.int32),
                            capacity=new_tokens - 1)
    return jnp.concatenate([first, rest], axis=1)


def row_keys(rng: jax.Array, rows: int) -> jax.Array:
    """One sampling key per row: fold_in(rng, row)."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(rows))


class GRPOTask(PolicyTask):
    @classmethod
    def check(cls, c: ml_collections.ConfigDict) -> None:
        super().check(c)
        r = c.rl
        require(r.num_generations >= 2, f"rl.num_generations={r.num_generations}: the "
                "advantages compare samples of a prompt, take at least 2.")
        require(c.train.batch_size % r.num_generations == 0,
                f"train.batch_size={c.train.batch_size}: completions per step, must be a "
                f"multiple of rl.num_generations={r.num_generations}.")
        require(r.mu >= 1, f"rl.mu={r.mu}: updates per rollout batch, at least 1.")
        require(r.epsilon > 0, f"rl.epsilon={r.epsilon}: the clip range, must be positive.")
        require(r.beta >= 0, f"rl.beta={r.beta}: the KL weight, >= 0 (0 drops the reference).")
        require(r.loss_norm in LOSS_NORMS, f"rl.loss_norm={r.loss_norm!r}: use "
                f"{', '.join(LOSS_NORMS)}.")
        require(r.temperature > 0, f"rl.temperature={r.temperature}: rollouts sample, must be "
                "positive.")
        chunk = c.train.get("loss_chunk", 0)
        require(not chunk or c.sft.max_answer_tokens % chunk == 0, f"train.loss_chunk={chunk}:"
                " completions' logits are formed this many positions at a time, use a divisor "
                f"of sft.max_answer_tokens={c.sft.max_answer_tokens}.")
        require(c.train.grad_accum == 1, f"train.grad_accum={c.train.grad_accum}: a GRPO step "
                "is one rollout batch and one update; lower train.batch_size instead.")
        require(r.prompt_length >= 0 and r.prompt_length + c.sft.max_answer_tokens <=
                c.model.block_size, f"rl.prompt_length={r.prompt_length}: prompt tokens per "
                "row (0: the longest prompt), with sft.max_answer_tokens at most "
                f"model.block_size={c.model.block_size}.")
        rewards_lib.load(r.reward, r.format_pattern)  # a bad name fails before any data is read

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        self.reward = rewards_lib.load(cfg.rl.reward, cfg.rl.format_pattern)
        self.new_tokens = cfg.sft.max_answer_tokens
        # The one decoder's text handling on the host (stop strings, end-of-text), without
        # weights: the step samples on the device with its own.
        self.text = Generator(self.plain, {}, self.tokenizer)
        self.request = Request("", self.new_tokens, stop=tuple(cfg.sft.stop))
        self.stops = jnp.asarray(self.text.stop_table([self.request], 1)[0])

    def uses_reference(self) -> bool:
        return self.cfg.rl.beta > 0

    # -- data ------------------------------------------------------------------------------

    @functools.cached_property
    def data(self) -> dict:
        """Every prompt encoded once, left-padded to the longest (at most the context less
        the completion)."""
        cfg = self.cfg
        room = cfg.rl.prompt_length or self.seq_len - self.new_tokens
        out, encoded = {}, {}
        for split, recs in zip(("train", "val"), sft_data.load_records(cfg.data, cfg.seed)):
            for i, r in enumerate(recs):
                if not isinstance(r.get("prompt"), str):
                    raise sft_data.SFTDataError(f"{split} record {i}: task=grpo needs a string "
                                                f"'prompt'; got keys {sorted(r)}.")
            encoded[split] = [self.text.encode(sft_data.format_prompt(cfg.sft.template,
                                                                      r["prompt"]))[-room:]
                              for r in recs]
            out[f"{split}_records"] = recs
        if not cfg.rl.prompt_length:
            # Resolved into the config, which the run directory and checkpoints store: a run
            # loaded for inference knows the rollout buffer's shape without reading the data.
            longest = max(len(p) for ps in encoded.values() for p in ps)
            cfg.rl.prompt_length = min(room, -(-longest // 8) * 8)
        for split, prompts in encoded.items():
            n = len(prompts)
            tokens = np.zeros((n, self.prompt_length), np.int32)
            start = np.zeros((n,), np.int32)
            for i, p in enumerate(prompts):
                start[i] = self.prompt_length - len(p)
                tokens[i, start[i]:] = p
            out[split] = {"prompt": tokens, "start": start, "record": np.arange(n, dtype=np.int32)}
        return out

    @property
    def prompt_length(self) -> int:
        """Prompt tokens per row (left-padded): rl.prompt_length, or the longest prompt."""
        if not self.cfg.rl.prompt_length:
            self.data  # noqa: B018 (resolves it)
        return self.cfg.rl.prompt_length

    @property
    def tokens_per_example(self) -> int:
        """Positions per completion row (prompt and completion)."""
        return self.prompt_length + self.new_tokens

    def describe(self) -> str:
        r, d = self.cfg.rl, self.data
        return (f"{len(d['train_records']):,} training and {len(d['val_records']):,} validation "
                f"prompts (padded to {self.prompt_length} tokens) ; "
                f"{self.cfg.train.batch_size // r.num_generations} prompts x {r.num_generations}"
                f" samples of up to {self.new_tokens} tokens per rollout batch, mu={r.mu}; "
                f"reward {r.reward}; beta {r.beta:g}, epsilon {r.epsilon:g}, loss per "
                f"{r.loss_norm}")

    def example_arrays(self, split: str = "train") -> dict:
        return self.data["train" if split == "train" else "val"]

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["prompt"])

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        """The prompts of rollout batch step // mu, each repeated G times, and whether this step
        samples them (the first of its mu steps)."""
        r = self.cfg.rl
        ids = epoch_indices(self.cfg.seed, step // r.mu,
                            self.cfg.train.batch_size // r.num_generations, self.num_examples())
        rows = local_rows(np.repeat(ids, r.num_generations), process_index, process_count)
        return {**self.examples("train", rows), "fresh": np.full(len(rows), step % r.mu == 0)}

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        n = self.num_examples("val")
        n = n if not max_examples else min(max_examples, n)
        return padded_batches(n, batch_size, lambda idx: self.examples("val", idx))

    def init_variables(self, rng: jax.Array):
        variables = super().init_variables(rng)
        if self.cfg.rl.mu > 1:  # a rollout batch kept for the next mu - 1 steps
            n, t = self.cfg.train.batch_size, self.new_tokens
            length = self.prompt_length + t
            shapes = {"tokens": ((n, length), jnp.int32),
                      "segment_ids": ((n, length - 1), jnp.int32),
                      "mask": ((n, t), jnp.float32), "advantages": ((n,), jnp.float32),
                      "rewards": ((n,), jnp.float32), "old_logps": ((n, t), jnp.float32)}
            if self.uses_reference():
                shapes["ref_logps"] = ((n, t), jnp.float32)
            variables = {**variables, ROLLOUTS: {
                k: nn.Partitioned(jnp.zeros(s, d), names=("batch",) + (None,) * (len(s) - 1))
                for k, (s, d) in shapes.items()}}
        return variables

    # -- rollouts --------------------------------------------------------------------------

    def _score_host(self, split: str, tokens: np.ndarray, ids: np.ndarray):
        """(rewards, completion lengths in tokens, the stop string's last token included)."""
        records = self.data[f"{split}_records"]
        rewards = np.zeros(len(tokens), np.float32)
        lengths = np.zeros(len(tokens), np.int32)
        for i, (row, rid) in enumerate(zip(np.asarray(tokens), np.asarray(ids))):
            done = Completion(text="", tokens=[])
            self.text.extend(done, self.request, row.tolist())
            record = records[int(rid)]
            rewards[i] = self.reward(record["prompt"], done.text, record)
            lengths[i] = len(done.tokens)
        return rewards, lengths

    def rollout(self, params, batch: dict, rng: jax.Array, temperature,
                split: str = "train") -> tuple[jax.Array, jax.Array, jax.Array]:
        """(completions (rows, T), rewards (rows,), lengths (rows,)) of the batch's prompts,
        sampled from the policy (LoRA adapters folded in; no gradient flows through)."""
        plain = jax.lax.stop_gradient(lora.merged(params, self.cfg.get("lora")))
        rows = batch["prompt"].shape[0]
        completion = sample(self.plain, plain, batch["prompt"], batch["start"],
                            row_keys(rng, rows), self.stops, temperature,
                            new_tokens=self.new_tokens)
        out = (jax.ShapeDtypeStruct((rows,), jnp.float32),
               jax.ShapeDtypeStruct((rows,), jnp.int32))
        scores, lengths = jax.pure_callback(functools.partial(self._score_host, split), out,
                                            completion, batch["record"])
        return completion, scores, lengths

    def rollouts(self, params, model_state, batch, rng) -> dict:
        """A rollout batch: sequences, masks, advantages, rewards and reference log-probs."""
        r = self.cfg.rl
        completion, scores, lengths = self.rollout(params, batch, rng, r.temperature)
        tokens = jnp.concatenate([batch["prompt"], completion], axis=1)
        # Left padding is segment 0: the prompt's positions start at 0 where it starts.
        segment_ids = (jnp.arange(tokens.shape[1] - 1)[None] >=
                       batch["start"][:, None]).astype(jnp.int32)
        out = {"tokens": tokens, "segment_ids": segment_ids,
               "mask": (jnp.arange(self.new_tokens)[None] < lengths[:, None]).astype(
                   jnp.float32),
               "advantages": group_advantages(scores, r.num_generations, r.scale_rewards),
               "rewards": scores, "old_logps": jnp.zeros(completion.shape, jnp.float32)}
        if self.uses_reference():
            ref = self.reference_params(params, model_state)
            out["ref_logps"] = self.completion_logps(self.plain, ref, out)
        return out

    def completion_logps(self, model, params, ro: dict) -> jax.Array:
        """log p of each completion token (rows, T) under `model`."""
        return self.logps(model, params, ro["tokens"][:, :-1], ro["tokens"][:, 1:],
                          ro["segment_ids"], last=self.new_tokens)

    # -- the step --------------------------------------------------------------------------

    def loss(self, params, model_state, batch, rng):
        r = self.cfg.rl
        if r.mu == 1:
            ro = self.rollouts(params, model_state, batch, rng)
        else:  # the first of mu steps samples; the others reuse its batch
            fresh = batch["fresh"][0]
            ro = jax.lax.cond(fresh, lambda: self.rollouts(params, model_state, batch, rng),
                              lambda: model_state[ROLLOUTS])
        logps = self.completion_logps(self.model, params, ro)
        old = jax.lax.stop_gradient(logps)
        if r.mu > 1:
            old = jnp.where(fresh, old, ro["old_logps"])
        loss, metrics = policy_loss(logps, old, ro.get("ref_logps"), ro["advantages"],
                                    ro["mask"], epsilon=r.epsilon, beta=r.beta,
                                    norm=r.loss_norm)
        metrics.update(reward=ro["rewards"].mean(), reward_std=ro["rewards"].std(),
                       completion_length=ro["mask"].sum(-1).mean())
        state = self.with_reference(model_state, params)
        if r.mu > 1:
            state = {**state, ROLLOUTS: {**ro, "old_logps": old}}
        return loss, (metrics, state)

    def eval_outputs(self, params, model_state, batch):
        """Greedy completions of the validation prompts and their rewards."""
        _, scores, lengths = self.rollout(params, batch, jax.random.PRNGKey(0), 0.0, "val")
        w = batch["weights"]
        sums = {"loss": -(scores * w).sum(), "reward": (scores * w).sum(),
                "completion_length": (lengths * w).sum(), "count": w.sum()}
        return {"sums": sums, "examples": {}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        return Task.summarize(self, sums, examples)
