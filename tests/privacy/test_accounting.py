"""The privacy budget: dp-accounting's figures, cross-checked by an independent accountant
(Opacus, PyTorch), and noise calibration for a target epsilon."""

import pytest

from lmjax.privacy import accounting


def test_epsilon_is_dp_accountings_pld_and_rdp():
    import dp_accounting
    from dp_accounting import pld, rdp
    q, sigma, steps, delta = 0.02, 1.1, 100, 1e-5
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    for ours, reference in (("pld", pld.PLDAccountant()), ("rdp", rdp.RdpAccountant())):
        reference.compose(event)
        assert accounting.epsilon(q, sigma, steps, delta, ours) == \
            pytest.approx(reference.get_epsilon(delta), rel=1e-12)
    # RDP is an upper bound on the tight PLD figure; more steps spend more; no step spends 0.
    assert accounting.epsilon(q, sigma, steps, delta, "pld") < \
        accounting.epsilon(q, sigma, steps, delta, "rdp")
    assert accounting.epsilon(q, sigma, 2 * steps, delta) > accounting.epsilon(q, sigma, steps,
                                                                               delta)
    assert accounting.epsilon(q, sigma, 0, delta) == 0.0


def test_opacus_rdp_and_prv_accountants_agree_within_5_percent():
    from opacus.accountants import PRVAccountant, RDPAccountant
    for q, sigma, steps in ((0.01, 1.0, 300), (0.05, 2.0, 100)):
        delta = 1e-5
        rdp, prv = RDPAccountant(), PRVAccountant()
        rdp.history = [(sigma, q, steps)]  # (noise multiplier, sample rate, steps)
        prv.history = [(sigma, q, steps)]
        assert rdp.get_epsilon(delta) == pytest.approx(
            accounting.epsilon(q, sigma, steps, delta, "rdp"), rel=0.05)
        assert prv.get_epsilon(delta) == pytest.approx(
            accounting.epsilon(q, sigma, steps, delta, "pld"), rel=0.05)


def test_calibration_finds_the_least_noise_within_the_target():
    q, steps, delta = 0.05, 40, 1e-5
    sigma = accounting.calibrate(2.0, q, steps, delta)
    assert accounting.epsilon(q, sigma, steps, delta) <= 2.0
    assert accounting.epsilon(q, sigma / 1.02, steps, delta) > 2.0  # tight to a few percent
    with pytest.raises(accounting.PrivacyError, match="cannot be reached"):
        accounting.calibrate(1e-3, 0.5, 100, delta)
    with pytest.raises(accounting.PrivacyError, match="must be > 0"):
        accounting.calibrate(0.0, q, steps, delta)


def test_tiny_noise_is_accounted_by_rdp_not_the_slow_pld():
    # PLD's grid grows as 1/sigma^2 (a DP-FedAvg run with sigma 0.01 spent 14 minutes in it);
    # below MIN_SIGMA the RDP bound answers in seconds, and it is a vast epsilon.
    sigma = accounting.MIN_SIGMA / 30
    got = accounting.epsilon(0.1, sigma, 4, 1e-5)
    assert got == accounting.epsilon(0.1, sigma, 4, 1e-5, accountant="rdp")
    assert got > 1000
