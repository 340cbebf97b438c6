"""Canary exposure (Carlini et al., "The Secret Sharer", 2019): does a model memorise a secret?

A canary such as "My ID is 281739452." is inserted k times into the training text. After
training, the canary's log-likelihood under the model is compared with that of random
candidates of the same format (the 9-digit space R holds 10^9 of them):

    exposure = log2 |R| - log2 rank(canary)

The full space is too large to score, so two estimates come from a uniform random sample of
n candidates (docs/privacy.md):
- `sampled`: the rank among the sample scaled up to R, i.e. -log2((1 + #better) / (n + 1));
  it is capped at log2(n + 1) bits (13.3 for n = 10^4);
- `extrapolated`: the paper's section 4.3: fit a skew-normal to the candidates' negative
  log-likelihoods and read the canary's rank off its CDF: -log2 CDF(canary). This reaches
  beyond the sample's cap, up to log2 |R| (29.9 bits for 9 digits).
A model that never saw the canary ranks it like any other candidate: about 1 bit or less.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

DEFAULT_PREFIX = "My ID is "
DEFAULT_SUFFIX = "."


def random_secret(rng: np.random.Generator, digits: int = 9) -> str:
    """A uniformly random string of `digits` decimal digits (leading zeros allowed)."""
    return "".join(str(d) for d in rng.integers(0, 10, size=digits))


def insert_canaries(text: str, canaries: dict[str, int], seed: int = 0) -> str:
    """`text` with each canary line inserted `count` times, at random line boundaries
    (`canaries`: {"My ID is 281739452.": 16, ...}); each insertion is its own line."""
    lines = text.split("\n")
    rng = np.random.default_rng(seed)
    slots: dict[int, list[str]] = {}
    for canary, count in canaries.items():
        if "\n" in canary:
            raise ValueError(f"canary {canary!r} spans lines: give one line.")
        if count < 0:
            raise ValueError(f"canary {canary!r}: insertion count {count} must be >= 0.")
        for at in rng.integers(0, len(lines) + 1, size=count):
            slots.setdefault(int(at), []).append(canary)
    out = []
    for i in range(len(lines) + 1):
        out += slots.get(i, [])
        if i < len(lines):
            out.append(lines[i])
    return "\n".join(out)


def count_canary(text: str, canary: str) -> int:
    return len(re.findall(re.escape(canary), text))


def sampled_exposure(canary_nll: float, candidate_nlls: np.ndarray) -> float:
    """-log2 of the canary's rank fraction among the candidates (lower NLL ranks first);
    a tie counts half, so a model that cannot tell them apart gives about 1 bit."""
    c = np.asarray(candidate_nlls, np.float64)
    better = np.sum(c < canary_nll) + 0.5 * np.sum(c == canary_nll)
    return float(-math.log2((1.0 + better) / (c.size + 1.0)))


def extrapolated_exposure(canary_nll: float, candidate_nlls: np.ndarray, space: float) -> float:
    """-log2 CDF(canary) under a skew-normal fitted to the candidates' NLLs (Secret Sharer,
    section 4.3), clipped to [0, log2 space]."""
    from scipy import stats  # lazy: scipy is only needed for this estimate

    c = np.asarray(candidate_nlls, np.float64)
    if np.ptp(c) == 0:  # the model cannot tell candidates apart: the median rank
        return 1.0
    a, loc, scale = stats.skewnorm.fit(c)
    log_cdf = stats.skewnorm.logcdf(canary_nll, a, loc, scale)
    bits = -float(log_cdf) / math.log(2.0)
    return float(min(max(bits, 0.0), math.log2(space)))


@dataclass
class Exposure:
    canary: str
    canary_nll: float        # nats, summed over the secret's tokens
    candidates: int
    sampled: float           # bits
    extrapolated: float      # bits
    median_nll: float        # of the candidates

    def line(self) -> str:
        return (f"{self.canary!r}: exposure {self.sampled:.2f} bits (rank among "
                f"{self.candidates} random candidates; cap {math.log2(self.candidates + 1):.1f}), "
                f"{self.extrapolated:.2f} bits (skew-normal extrapolation); NLL of the secret "
                f"{self.canary_nll:.2f} nats vs candidates' median {self.median_nll:.2f}")


def exposure(canary_nll: float, candidate_nlls: np.ndarray, canary: str = "",
             space: float = 1e9) -> Exposure:
    c = np.asarray(candidate_nlls, np.float64)
    return Exposure(canary=canary, canary_nll=float(canary_nll), candidates=int(c.size),
                    sampled=sampled_exposure(canary_nll, c),
                    extrapolated=extrapolated_exposure(canary_nll, c, space),
                    median_nll=float(np.median(c)))


def secret_nlls(logprob_fn, tokenizer, prefix: str, secrets: list[str], suffix: str = "",
                batch_size: int = 1024) -> np.ndarray:
    """The negative log-likelihood (nats) of each secret (plus `suffix`) after `prefix`: the
    sum of its tokens' log-probabilities. `logprob_fn(ids)` maps int32 [B, T] token ids to
    log-probabilities [B, T, V] of the next token (a jitted model call). All secrets must
    encode to the same number of tokens (true for digits under a char tokenizer)."""
    pre = np.asarray(tokenizer.encode(prefix), np.int32)
    rows = [np.asarray(tokenizer.encode(s + suffix), np.int32) for s in secrets]
    lengths = {r.size for r in rows}
    if len(lengths) != 1:
        raise ValueError("the candidates encode to different numbers of tokens: exposure needs "
                         "a tokenizer that splits the secret's digits alike (e.g. data.tokenizer"
                         "=char).")
    if pre.size == 0:
        raise ValueError("the canary needs a non-empty prefix before its secret.")
    secret = np.stack(rows)
    ids = np.concatenate([np.broadcast_to(pre, (len(rows), pre.size)), secret], axis=1)
    n, start = len(rows), pre.size
    out = np.empty((n,), np.float64)
    for lo in range(0, n, batch_size):
        chunk = ids[lo:lo + batch_size]
        pad = batch_size - chunk.shape[0]  # one compiled shape for every chunk
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        lp = np.asarray(logprob_fn(chunk[:, :-1]))  # predicts tokens 1..T-1
        target = chunk[:, start:]
        picked = np.take_along_axis(lp[:, start - 1:], target[..., None], axis=-1)[..., 0]
        out[lo:lo + batch_size] = -picked.sum(-1)[:batch_size - pad]
    return out


def model_logprob_fn(model, params):
    """A jitted `ids -> log_softmax(logits)` for a GPT from lmjax.models.gpt."""
    import jax  # lazy: keeps this module's import (and its maths, tested alone) light

    @jax.jit
    def fn(ids):
        logits = model.apply({"params": params}, ids)
        return jax.nn.log_softmax(logits.astype("float32"), axis=-1)

    return fn


def measure(logprob_fn, tokenizer, canary: str, prefix: str = DEFAULT_PREFIX,
            suffix: str = DEFAULT_SUFFIX, candidates: int = 10_000, seed: int = 0,
            batch_size: int = 1024) -> Exposure:
    """Exposure of `canary` (its secret: the digits after `prefix`) against `candidates`
    random secrets of the same length."""
    secret = canary[len(prefix):] if canary.startswith(prefix) else canary
    secret = secret[:-len(suffix)] if suffix and secret.endswith(suffix) else secret
    if not secret.isdigit():
        raise ValueError(f"canary {canary!r}: after the prefix {prefix!r} the secret must be "
                         "digits (e.g. 'My ID is 281739452.').")
    rng = np.random.default_rng(seed)
    others = [random_secret(rng, len(secret)) for _ in range(candidates)]
    others = [s for s in others if s != secret]
    nlls = secret_nlls(logprob_fn, tokenizer, prefix, [secret] + others, suffix, batch_size)
    return exposure(nlls[0], nlls[1:], prefix + secret + suffix, space=10.0 ** len(secret))
