"""Closed-form marginals against LinearSDE's numerical ones, and their properties."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as ss

F64 = torch.float64


def builtin_sdes():
    return {
        "vp": ss.VPSDE(0.1, 20.0),
        "vp_cosine": ss.VPSDE(schedule="cosine"),
        "subvp": ss.SubVPSDE(0.1, 20.0),
        "ve": ss.VESDE(0.01, 50.0),
    }


def dense_times(sde):
    return torch.cat([
        torch.logspace(math.log10(sde.eps), -2, 400, dtype=F64),
        torch.linspace(sde.eps, sde.T, 5001, dtype=F64),
    ])


@pytest.mark.parametrize("name", ["vp", "vp_cosine", "subvp", "ve"])
def test_closed_form_matches_numerical_linear_sde(name):
    sde = builtin_sdes()[name]
    numeric = ss.LinearSDE(sde.f, sde.g, sigma0=getattr(sde, "sigma0", 0.0))
    t = dense_times(sde)
    alpha, sigma = sde.marginal(t)
    alpha_n, sigma_n = numeric.marginal(t)
    assert ((alpha_n - alpha) / alpha).abs().max() < 1e-6
    assert ((sigma_n - sigma) / sigma).abs().max() < 1e-6
    # derived quantities the solvers use
    assert (numeric.log_snr(t) - sde.log_snr(t)).abs().max() < 1e-6
    assert ((numeric.dsigma2_dt(t) - sde.dsigma2_dt(t)) / sde.dsigma2_dt(t)).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["vp", "vp_cosine", "subvp", "ve"])
def test_log_snr_inverse(name):
    sde = builtin_sdes()[name]
    numeric = ss.LinearSDE(sde.f, sde.g, sigma0=getattr(sde, "sigma0", 0.0))
    t = dense_times(sde)
    lam = sde.log_snr(t)
    assert (sde.t_from_log_snr(lam) - t).abs().max() < 1e-9
    assert (numeric.t_from_log_snr(lam) - t).abs().max() < 1e-7


def test_custom_linear_sde_against_hand_integrated_ou():
    # dx = -theta x dt + s dW: alpha = e^{-theta t}, sigma^2 = s^2 (1 - e^{-2 theta t}) / (2 theta)
    theta, s = 1.7, 0.8
    sde = ss.LinearSDE(lambda t: -theta * torch.ones_like(t), lambda t: s * torch.ones_like(t), T=2.0)
    t = torch.linspace(1e-4, 2.0, 777, dtype=F64)
    alpha, sigma = sde.marginal(t)
    torch.testing.assert_close(alpha, torch.exp(-theta * t), rtol=1e-10, atol=0)
    var = s**2 * -torch.expm1(-2 * theta * t) / (2 * theta)
    torch.testing.assert_close(sigma, var.sqrt(), rtol=1e-8, atol=0)
    assert sde.prior_std == pytest.approx(float(var[-1].sqrt()), rel=1e-8)


def test_coefficients_given_as_numbers_broadcast():
    sde = ss.LinearSDE(lambda t: 0.0, lambda t: 1.0)
    alpha, sigma = sde.marginal(torch.tensor([0.25, 1.0], dtype=F64))
    torch.testing.assert_close(alpha, torch.ones(2, dtype=F64))
    torch.testing.assert_close(sigma, torch.tensor([0.5, 1.0], dtype=F64), rtol=1e-10, atol=0)


def test_vp_ddpm_chain_reproduces_the_marginals():
    # Composing the DDPM steps from 0 to t must give exactly alpha_t and sigma_t.
    sde = ss.VPSDE()
    n = 50
    times = torch.linspace(0, 1, n + 1, dtype=F64)[1:]
    x = torch.ones(1, 1, dtype=F64)
    mean, var = torch.ones(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64)
    for t in times:
        F, G = sde.discretize(x, t, 1.0 / n)
        keep = 1 + F / x  # the chain multiplies the state by sqrt(1 - beta_i)
        mean, var = keep * mean, keep.square() * var + G.square()
    alpha, sigma = sde.marginal(torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(mean.squeeze(), alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(var.squeeze().sqrt(), sigma, rtol=1e-12, atol=0)


def test_ve_smld_chain_reproduces_the_variance():
    sde = ss.VESDE(0.01, 50.0)
    n = 40
    x = torch.zeros(3, 2, dtype=F64)
    var = torch.full((1,), sde.sigma_min**2, dtype=F64)
    for t in torch.linspace(0, 1, n + 1, dtype=F64)[1:]:
        F, G = sde.discretize(x, t.expand(3), 1.0 / n)
        assert torch.equal(F, torch.zeros_like(x))
        var = var + G[0, 0].square()
    torch.testing.assert_close(var.sqrt().squeeze(), sde.sigma(1.0), rtol=1e-12, atol=0)


# ---- properties ---------------------------------------------------------------------------------

betas = st.tuples(st.floats(0.01, 2.0), st.floats(0.0, 40.0)).map(lambda p: (p[0], p[0] + p[1]))
dtypes = st.sampled_from([torch.float32, torch.float64])
batch_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@given(betas=betas, dtype=dtypes, cosine=st.booleans())
def test_vp_alpha_decreasing_std_increasing_and_unit_total_variance(betas, dtype, cosine):
    sde = ss.VPSDE(*betas, schedule="cosine" if cosine else "linear")
    t = torch.linspace(sde.eps, 1.0, 200, dtype=dtype)
    alpha, sigma = sde.marginal(t)
    assert alpha.dtype == dtype and sigma.dtype == dtype
    assert bool((alpha > 0).all()) and bool((alpha <= 1).all())
    assert bool((sigma > 0).all())
    assert bool((alpha[1:] <= alpha[:-1]).all())
    assert bool((sigma[1:] >= sigma[:-1]).all())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (alpha.square() + sigma.square() - 1).abs().max() < tol


@given(
    sigma_min=st.floats(1e-3, 1.0),
    ratio=st.floats(1.5, 1e4),
    dtype=dtypes,
)
def test_ve_std_positive_and_increasing(sigma_min, ratio, dtype):
    sde = ss.VESDE(sigma_min, sigma_min * ratio)
    t = torch.linspace(0.0, 1.0, 200, dtype=dtype)
    alpha, sigma = sde.marginal(t)
    assert bool((alpha == 1).all())
    assert bool((sigma > 0).all()) and bool((sigma[1:] > sigma[:-1]).all())
    assert sigma[0].item() == pytest.approx(sigma_min, rel=1e-5)
    assert sigma[-1].item() == pytest.approx(sigma_min * ratio, rel=1e-5)


@given(betas=betas)
def test_subvp_variance_below_vp(betas):
    t = torch.linspace(1e-3, 1.0, 100, dtype=F64)
    _, s_sub = ss.SubVPSDE(*betas).marginal(t)
    _, s_vp = ss.VPSDE(*betas).marginal(t)
    assert bool((s_sub > 0).all()) and bool((s_sub <= s_vp).all())


@given(
    name=st.sampled_from(["vp", "vp_cosine", "subvp", "ve", "linear"]),
    batch=batch_shapes,
    event=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    dtype=dtypes,
    data=st.data(),
)
def test_outputs_broadcast_over_batch_shapes_and_keep_dtype(name, batch, event, dtype, data):
    sdes = builtin_sdes()
    sdes["linear"] = ss.LinearSDE(lambda t: -0.5 * (1 + t), lambda t: (1 + t).sqrt())
    sde = sdes[name]
    tv = data.draw(st.floats(0.0, 1.0))
    t = torch.full(batch, tv, dtype=dtype)
    x0 = torch.randn(batch + event, dtype=dtype)
    alpha, sigma = sde.marginal(t)
    assert alpha.shape == batch and sigma.shape == batch
    assert alpha.dtype == dtype and alpha.device == x0.device
    mean, std = sde.marginal_prob(x0, t)
    assert mean.shape == x0.shape and mean.dtype == dtype
    assert (mean + std * x0).shape == x0.shape
    drift, diff = sde.drift(x0, t), sde.diffusion(x0, t)
    assert drift.shape == x0.shape and drift.dtype == dtype
    assert torch.broadcast_shapes(diff.shape, x0.shape) == x0.shape
    # a scalar time broadcasts too
    mean_s, _ = sde.marginal_prob(x0, torch.tensor(tv, dtype=dtype))
    torch.testing.assert_close(mean_s, mean)


@given(name=st.sampled_from(["vp", "vp_cosine", "subvp", "ve"]), n=st.integers(1, 5), d=st.integers(1, 4))
def test_prior_matches_marginal_at_T_and_log_prob_is_normalised_gaussian(name, n, d):
    sde = builtin_sdes()[name]
    gen = torch.Generator().manual_seed(n * 10 + d)
    z = sde.prior_sample((n, d), generator=gen, dtype=F64)
    assert z.shape == (n, d) and z.dtype == F64
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(z), ref)
    _, sigma_T = sde.marginal(torch.tensor(1.0, dtype=F64))
    assert sde.prior_std == pytest.approx(float(sigma_T), rel=1e-3)


def test_prior_sample_is_reproducible_from_a_generator():
    sde = ss.VESDE()
    a = sde.prior_sample((4, 3), generator=torch.Generator().manual_seed(3))
    b = sde.prior_sample((4, 3), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
