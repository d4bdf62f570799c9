"""The noise-level clock of a drift-free SDE: the field -u s(x, t(u)) is the general
(1/2) g(t)^2 (dt/du) s folded in closed form (1/2 g^2 dt/du = sigma_t = u), checked against it."""

from __future__ import annotations

import pytest
import torch

import scoresde as ss
from scoresde.flow import ProbabilityFlow
from scoresde.flow.clock import NoiseLevelClock


class GeneralPath(ProbabilityFlow):
    """The same system with the closed form switched off: g(t) and dt/du computed each call."""

    sigma_clock = False


def drift_free_sdes():
    r = torch.tensor(5.0, dtype=torch.float64)
    custom = ss.LinearSDE(lambda t: torch.zeros_like(t), lambda t: torch.sqrt(2 * r.log()) * 0.02 * r**t,
                          sigma0=0.02)  # the VE SDE written as a LinearSDE with f = 0
    return [ss.VESDE(), ss.VESDE(sigma_min=0.002, sigma_max=80.0), custom]


@pytest.mark.parametrize("sde", drift_free_sdes(), ids=["ve", "ve_edm_range", "linear_f0"])
def test_noise_level_field_equals_the_general_formula(sde):
    assert sde.alpha_is_one
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float64)
    score = gmm.score_fn(sde)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    fast, general = ProbabilityFlow(score, sde), GeneralPath(score, sde)
    for flow in (fast, general):
        flow.clock = NoiseLevelClock(sde)
    assert fast.sigma_clock and not general.sigma_clock
    for t in (0.05, 0.4, 0.9):
        u = torch.tensor(NoiseLevelClock(sde).u(t), dtype=torch.float64)
        torch.testing.assert_close(fast(u, x), general(u, x), rtol=1e-12, atol=1e-12)


def test_ve_likelihood_is_unchanged_by_the_closed_form():
    sde = ss.VESDE()
    gmm = ss.analytic.random_mixture(8, seed=1).to(dtype=torch.float64)
    x = gmm.sample(40, generator=torch.Generator().manual_seed(2))
    score = gmm.score_fn(sde)
    kw = dict(rtol=1e-8, atol=1e-8, prior_log_prob=gmm.prior_log_prob(sde))  # the exact p_T: only the solver errs
    got = ss.log_likelihood(score, sde, x, **kw)
    import scoresde.likelihood.core as core

    original = core.AugmentedFlow.sigma_clock
    try:
        core.AugmentedFlow.sigma_clock = False  # the general path for the same solve
        assert core.AugmentedFlow(score, sde).sigma_clock is False
        want = ss.log_likelihood(score, sde, x, **kw)
    finally:
        core.AugmentedFlow.sigma_clock = original
    torch.testing.assert_close(got.log_p, want.log_p, rtol=0, atol=1e-8)
    exact = gmm.log_prob(x, sde.eps, sde)
    assert float((got.log_p - exact).abs().max()) < 1e-5
