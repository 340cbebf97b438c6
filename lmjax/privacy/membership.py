"""A loss-threshold membership-inference attack (Yeom et al. 2018): an example the model was
trained on tends to have a lower loss than one it never saw. The attack's ROC AUC over members
(training examples) against non-members (test examples) measures how much the model leaks:
0.5 is chance; DP-SGD bounds it (an (epsilon, delta)-DP model's attack advantage is at most
e^epsilon - 1 + delta, far tighter in practice).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np


@dataclasses.dataclass
class AttackResult:
    auc: float            # ROC AUC of "member" scored by -loss (0.5: chance)
    advantage: float      # max over thresholds of TPR - FPR (Yeom et al.'s membership advantage)
    members: int
    non_members: int
    member_loss: float    # mean loss of each group
    non_member_loss: float


def choose(num_examples: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` distinct example indices (all of them when count is 0 or at least n), sorted."""
    if count <= 0 or count >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng(seed).choice(num_examples, count, replace=False))


def batched_losses(loss_fn: Callable[[dict], np.ndarray], batches: Iterator[dict]) -> np.ndarray:
    """Per-example losses over padded batches (rows with weight 0 dropped)."""
    out = []
    for batch in batches:
        losses = np.asarray(loss_fn(batch))
        out.append(losses[np.asarray(batch["weights"]) > 0])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def attack(member_losses: np.ndarray, non_member_losses: np.ndarray) -> AttackResult:
    """The loss-threshold attack's AUC and advantage (scikit-learn's ROC)."""
    from sklearn.metrics import roc_auc_score, roc_curve  # lazy: only this command needs it
    member_losses = np.asarray(member_losses, np.float64)
    non_member_losses = np.asarray(non_member_losses, np.float64)
    if len(member_losses) == 0 or len(non_member_losses) == 0:
        raise ValueError("the membership attack needs at least one member and one non-member.")
    labels = np.r_[np.ones(len(member_losses)), np.zeros(len(non_member_losses))]
    scores = -np.r_[member_losses, non_member_losses]  # lower loss: more likely a member
    fpr, tpr, _ = roc_curve(labels, scores)
    return AttackResult(auc=float(roc_auc_score(labels, scores)),
                        advantage=float(np.max(tpr - fpr)), members=len(member_losses),
                        non_members=len(non_member_losses),
                        member_loss=float(member_losses.mean()),
                        non_member_loss=float(non_member_losses.mean()))
