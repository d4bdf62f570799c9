"""The noise-level clock of a drift-free SDE folds its factor in closed form: the PF-ODE is
dx/du = -u s(x, t(u)), since 1/2 g^2 dt/du = sigma_t = u; checked against the general
coefficients (f dt/du, 1/2 g(t)^2 dt/du) that every other clock and SDE use."""

from __future__ import annotations

import pytest
import torch

import scoresde as ss
from scoresde.flow import ProbabilityFlow
from scoresde.flow.clock import Clock, NoiseLevelClock


def general_coefficients(clock, sde, u, t):
    """The coefficients by the general formula, without the closed form."""
    return Clock.drift_coefficients(clock, sde, u, t)


def drift_free_sdes():
    r = torch.tensor(5.0, dtype=torch.float64)
    custom = ss.LinearSDE(lambda t: torch.zeros_like(t), lambda t: torch.sqrt(2 * r.log()) * 0.02 * r**t,
                          sigma0=0.02)  # the VE SDE written as a LinearSDE with f = 0
    return [ss.VESDE(), ss.VESDE(sigma_min=0.002, sigma_max=80.0), custom]


@pytest.mark.parametrize("sde", drift_free_sdes(), ids=["ve", "ve_edm_range", "linear_f0"])
def test_noise_level_coefficients_and_field_equal_the_general_formula(sde):
    assert sde.alpha_is_one
    clock = NoiseLevelClock(sde)
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float64)
    score = gmm.score_fn(sde)
    flow = ProbabilityFlow(score, sde)
    flow.clock = clock
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for tv in (0.05, 0.4, 0.9):
        u = torch.tensor(clock.u(tv), dtype=torch.float64)
        t = clock.t(u)
        a, b = clock.drift_coefficients(sde, u, t)
        a_gen, b_gen = general_coefficients(clock, sde, u, t)
        assert a is None and a_gen is None
        torch.testing.assert_close(b, b_gen, rtol=1e-12, atol=0)
        want = -b_gen * score(x, t.expand(32))  # -(1/2) g^2 (dt/du) s, written out
        torch.testing.assert_close(flow(u, x), want, rtol=1e-12, atol=1e-12)


def test_ve_likelihood_is_unchanged_by_the_closed_form(monkeypatch):
    sde = ss.VESDE()
    gmm = ss.analytic.random_mixture(8, seed=1).to(dtype=torch.float64)
    x = gmm.sample(40, generator=torch.Generator().manual_seed(2))
    score = gmm.score_fn(sde)
    kw = dict(rtol=1e-8, atol=1e-8, prior_log_prob=gmm.prior_log_prob(sde))  # the exact p_T: only the solver errs
    got = ss.log_likelihood(score, sde, x, **kw)
    calls = []

    def general(self, sde, u, t):
        calls.append(1)
        return general_coefficients(self, sde, u, t)
    monkeypatch.setattr(NoiseLevelClock, "drift_coefficients", general)  # the general path for the same solve
    want = ss.log_likelihood(score, sde, x, **kw)
    assert len(calls) > 100  # every right-hand side of the solve took the general path
    torch.testing.assert_close(got.log_p, want.log_p, rtol=0, atol=1e-8)
    exact = gmm.log_prob(x, sde.eps, sde)
    assert float((got.log_p - exact).abs().max()) < 1e-5
