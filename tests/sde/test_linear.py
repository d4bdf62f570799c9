"""The numeric LinearSDE refuses coefficients its grid cannot integrate, instead of wrong marginals."""

import math

import pytest
import torch

import scoresde as ss

F64 = torch.float64


def cosine_beta(end: float):
    # Nichol & Dhariwal's cosine schedule in continuous time, beta = -d log alpha_bar / dt
    s = 0.008
    phi0, dphi = 0.5 * math.pi * s / (1 + s), 0.5 * math.pi * end / (1 + s)
    return lambda t: 2 * dphi * torch.tan(phi0 + dphi * t)


def test_a_cosine_schedule_left_to_diverge_at_T_is_refused():
    # beta(1) = pi tan(pi/2) ~ 1.6e16 is finite in floating point: the marginals used to come out
    # with alpha^2 + sigma^2 - 1 = -0.77 at t = 1 and no word said
    beta = cosine_beta(1.0)
    with pytest.raises(ss.ArgumentError, match=r"LinearSDE cannot integrate the marginals accurately near t = 1: .* "
                                                r"f or g diverges there or varies too fast for the grid: truncate a "
                                                r"schedule whose beta\(t\) diverges at T"):
        ss.LinearSDE(lambda t: -0.5 * beta(t), lambda t: beta(t).sqrt())


def test_the_truncated_cosine_is_accepted_and_matches_the_built_in():
    beta = cosine_beta(0.9946)
    numeric = ss.LinearSDE(lambda t: -0.5 * beta(t), lambda t: beta(t).sqrt())
    t = torch.linspace(1e-4, 1, 1001, dtype=F64)
    alpha, sigma = numeric.marginal(t)
    assert (alpha.square() + sigma.square() - 1).abs().max() < 1e-7
    torch.testing.assert_close(alpha, ss.VPSDE(schedule="cosine").marginal(t)[0], rtol=1e-7, atol=0)


def test_a_steep_coefficient_asks_for_a_finer_grid_and_a_finer_grid_serves_it():
    beta = lambda t: 0.1 + 1 / (1.002 - t)  # noqa: E731  (a pole 0.002 beyond T)
    f, g = (lambda t: -0.5 * beta(t)), (lambda t: beta(t).sqrt())
    with pytest.raises(ss.ArgumentError, match=r"near t = 0.99\d+: the interpolation .* raise grid_size=4096"):
        ss.LinearSDE(f, g)
    sde = ss.LinearSDE(f, g, grid_size=16384)
    t = torch.linspace(0.5, 1, 501, dtype=F64)
    # VP form: alpha^2 = exp(-int beta) in closed form
    B = 0.1 * t + torch.log(1.002 / (1.002 - t))
    torch.testing.assert_close(sde.marginal(t)[0], torch.exp(-0.5 * B), rtol=1e-8, atol=0)


def test_a_drift_free_linear_sde_says_so():
    ve_like = ss.LinearSDE(lambda t: 0 * t, lambda t: torch.exp(t), sigma0=0.1)
    assert ve_like.alpha_is_one
    assert not ss.LinearSDE(lambda t: -t, lambda t: 1 + 0 * t).alpha_is_one
