"""The privacy budget of DP-SGD: epsilon at delta for (sampling rate q, noise multiplier sigma,
steps), from Google's dp-accounting.

The privacy loss distribution (PLD) accountant is the reported figure (tight); Renyi DP (RDP)
is the cross-check (an upper bound, a little higher). Opacus's RDP and PRV accountants agree
within 5% (tests/privacy/test_accounting.py). dp-accounting is imported lazily: an optional
extra (`privacy`), and only DP runs need it.
"""

from __future__ import annotations

import functools

# PLD's grid: 1e-4 is dp-accounting's default (about 2 s for 2,000 steps here); calibration
# searches on a 10x coarser grid, then checks the result on the fine one.
FINE, COARSE = 1e-4, 1e-3
MAX_SIGMA = 50.0  # beyond this the noise drowns any signal: the target is called unreachable
MIN_SIGMA = 0.3   # the least noise calibration returns (PLD below it is slow, epsilon huge)


class PrivacyError(ValueError):
    """A privacy setting that cannot work (e.g. a target epsilon out of reach)."""


def _event(q: float, sigma: float, steps: int):
    import dp_accounting  # lazy: optional extra, imported only by DP runs
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


@functools.lru_cache(maxsize=256)
def epsilon(q: float, sigma: float, steps: int, delta: float, accountant: str = "pld",
            discretization: float = FINE) -> float:
    """Epsilon spent after `steps` Poisson-sampled Gaussian steps (0 for no step). Below
    MIN_SIGMA the PLD accountant takes minutes to hours (its privacy-loss grid grows as
    1/sigma^2), so there RDP answers: an upper bound, and a loose one, on a vast epsilon."""
    if steps <= 0:
        return 0.0
    if sigma <= 0:
        return float("inf")
    from dp_accounting import pld, rdp  # lazy: optional extra
    if accountant == "pld" and sigma < MIN_SIGMA:
        accountant = "rdp"
    if accountant == "pld":
        acc = pld.PLDAccountant(value_discretization_interval=discretization)
    elif accountant == "rdp":
        acc = rdp.RdpAccountant()
    else:
        raise ValueError(f"accountant={accountant!r}: use 'pld' or 'rdp'.")
    acc.compose(_event(q, sigma, steps))
    return float(acc.get_epsilon(delta))


def calibrate(target_epsilon: float, q: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier (to 0.5%, at least MIN_SIGMA) that spends at most
    `target_epsilon` in `steps`. Raises PrivacyError when it would take more than MAX_SIGMA."""
    if target_epsilon <= 0:
        raise PrivacyError(f"privacy.target_epsilon={target_epsilon}: must be > 0.")
    spent = lambda s, disc=COARSE: epsilon(q, s, steps, delta, "pld", disc)  # noqa: E731
    if spent(MAX_SIGMA) > target_epsilon:
        raise PrivacyError(
            f"privacy.target_epsilon={target_epsilon} cannot be reached in {steps} steps at "
            f"sampling rate q={q:.4g}: even noise_multiplier={MAX_SIGMA} spends "
            f"{spent(MAX_SIGMA):.3g}. Raise the target, or lower train.num_steps or "
            "train.batch_size.")
    lo, hi = MIN_SIGMA, MAX_SIGMA
    if spent(lo) <= target_epsilon:
        return lo
    while hi / lo > 1.005:  # bisection in log space: epsilon falls monotonically with sigma
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if spent(mid) <= target_epsilon else (mid, hi)
    while spent(hi, FINE) > target_epsilon:  # the coarse grid may differ slightly
        hi *= 1.005
    return hi
