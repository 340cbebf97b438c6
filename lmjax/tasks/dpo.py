"""Direct preference optimisation (Rafailov et al., 2023) of a GPT on chosen/rejected answers.

Each record holds a prompt, a chosen and a rejected answer (lmjax/data/preferences.py). With
`h = (log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))`, where the
log-probabilities are summed over the answer's tokens only (SFT's answer-only weights):

    dpo.loss='sigmoid'   -log sigmoid(beta * h)               (DPO)
    dpo.loss='ipo'       (h - 1 / (2 beta))^2, log-probabilities averaged per token (IPO,
                         Azar et al., 2023; as TRL computes it)

The reference is the starting model (lmjax/tasks/policy.py: with LoRA the adapters off, else a
frozen copy in the model state), evaluated beside the policy in every step. The implicit
rewards `beta * (log pi - log ref)` of both answers give the metrics, logged at every
evaluation like any task's: reward accuracy (chosen above rejected; a tie counts one half, so
the starting model scores 0.5), reward margin, chosen and rejected rewards. At the end of
training the model answers the validation prompts greedily, as SFT's does (exact match and F1
against the chosen answers). Pairs are padded one to a row (packing does not apply: the two
answers of a pair are compared, not concatenated).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from lmjax.config import require
from lmjax.data import chat, preferences
from lmjax.data import sft as sft_data
from lmjax.tasks.base import Task, padded_batches
from lmjax.tasks.policy import PolicyTask

LOSSES = ("sigmoid", "ipo")
SIDES = ("chosen", "rejected")


def pair_metrics(policy: jax.Array, reference: jax.Array, beta: float,
                 loss: str) -> dict[str, jax.Array]:
    """Per-pair loss and rewards from answer log-probabilities: `policy` and `reference` are
    (2, pairs) arrays, row 0 the chosen answers', row 1 the rejected ones' (IPO: per-token
    means)."""
    rewards = beta * (policy - reference)
    h = (policy[0] - policy[1]) - (reference[0] - reference[1])
    if loss == "sigmoid":
        per_pair = -jax.nn.log_sigmoid(beta * h)
    else:
        per_pair = (h - 1.0 / (2.0 * beta)) ** 2
    accuracy = (rewards[0] > rewards[1]) + 0.5 * (rewards[0] == rewards[1])
    return {"loss": per_pair, "reward_accuracy": accuracy.astype(jnp.float32),
            "reward_margin": rewards[0] - rewards[1], "chosen_reward": rewards[0],
            "rejected_reward": rewards[1]}


def answer_logps(logps: jax.Array, weights: jax.Array, average: bool) -> jax.Array:
    """(rows,) the answers' log-probabilities from each position's (rows, length): summed over
    weighted positions, or averaged."""
    total = (logps * weights).sum(-1)
    return total / jnp.maximum(weights.sum(-1), 1.0) if average else total


class DPOTask(PolicyTask):
    @classmethod
    def check(cls, c: ml_collections.ConfigDict) -> None:
        super().check(c)
        d = c.dpo
        require(d.loss in LOSSES, f"dpo.loss={d.loss!r}: use {' or '.join(LOSSES)}.")
        require(d.beta > 0, f"dpo.beta={d.beta}: the strength of the pull towards the "
                "reference, must be positive (0.1 is usual).")
        require(c.train.get("loss_chunk", 0) == 0, f"train.loss_chunk={c.train.loss_chunk}: "
                "DPO forms the answers' whole logits; set --config.train.loss_chunk=0.")

    # -- data ------------------------------------------------------------------------------

    @functools.cached_property
    def data(self) -> dict:
        s, cfg = self.cfg.sft, self.cfg
        out, dropped = {}, {}
        hf = chat.hf_chat(self.tokenizer)  # messages: the model's own chat template, if any
        for split, recs in zip(("train", "val"), sft_data.load_records(cfg.data, cfg.seed)):
            pairs, kept = [], []
            for i, r in enumerate(recs):
                pair = preferences.encode(self.tokenizer, r, s.template, s.end, self.seq_len + 1,
                                          f"{split} record {i}", hf)
                if pair is not None:
                    pairs.append(pair)
                    kept.append(preferences.as_qa(r))
            if not pairs:
                raise sft_data.SFTDataError(f"no {split} pair fits model.block_size="
                                            f"{self.seq_len} tokens.")
            out[split], out[f"{split}_records"] = pairs, kept
            dropped[split] = len(recs) - len(pairs)
        # Padded to the longest answer of either split, not to the context.
        self.row_length = max(len(e.tokens) for p in out["train"] + out["val"] for e in p) - 1
        out["rows"] = preferences.rows(out["train"], self.row_length)
        out["val_rows"] = preferences.rows(out["val"], self.row_length)
        out["dropped"] = dropped
        return out

    @property
    def tokens_per_example(self) -> int:
        """Positions per pair (both answers' rows)."""
        return 2 * (self.row_length if "data" in self.__dict__ else self.seq_len)

    def describe(self) -> str:
        d, p = self.data, self.cfg.dpo
        return (f"{len(d['train']):,} training and {len(d['val']):,} validation pairs "
                f"({d['dropped']['train']} + {d['dropped']['val']} longer than the context "
                f"dropped), padded to {self.row_length}; DPO loss {p.loss}, beta {p.beta:g}, "
                "answer-only log-probabilities")

    def example_arrays(self, split: str = "train") -> dict:
        return self.data["rows" if split == "train" else "val_rows"]

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["chosen_inputs"])

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        n = self.num_examples("val")
        n = n if not max_examples else min(max_examples, n)
        return padded_batches(n, batch_size, lambda idx: self.examples("val", idx))

    # -- model -----------------------------------------------------------------------------

    def pairs(self, params, model_state, batch) -> dict[str, jax.Array]:
        """Per-pair loss and rewards of a batch: the policy and the reference each run once on
        the chosen and rejected rows together."""
        both = {k: jnp.concatenate([batch[f"{side}_{k}"] for side in SIDES])
                for k in ("inputs", "targets", "loss_weights", "segment_ids")}
        average = self.cfg.dpo.loss == "ipo"

        def logps(model, p):
            lp = self.logps(model, p, both["inputs"], both["targets"], both["segment_ids"])
            return answer_logps(lp, both["loss_weights"], average).reshape(2, -1)

        policy = logps(self.model, params)
        reference = logps(self.plain, self.reference_params(params, model_state))
        return pair_metrics(policy, reference, self.cfg.dpo.beta, self.cfg.dpo.loss)

    def loss(self, params, model_state, batch, rng):
        per_pair = self.pairs(params, model_state, batch)
        means = {k: v.mean() for k, v in per_pair.items()}
        return means.pop("loss"), (means, self.with_reference(model_state, params))

    def eval_outputs(self, params, model_state, batch):
        w = batch["weights"]
        sums = {k: (v * w).sum() for k, v in self.pairs(params, model_state, batch).items()}
        return {"sums": {**sums, "count": w.sum()}, "examples": {}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        return Task.summarize(self, sums, examples)  # means; no perplexity (not a token loss)
