"""encode / decode round trips, and bits/dim against closed forms for Gaussian data."""

import math

import pytest
import torch

import scoresde as ss
from scoresde.likelihood import dequantize, nats_to_bits_per_dim

from .conftest import SDE_FACTORIES, data, mixture


@pytest.mark.parametrize("name", ["vp", "ve", "custom_linear"])
def test_decode_inverts_encode(name):
    sde, gmm = SDE_FACTORIES[name](), mixture(2)
    x = data(gmm, sde, 64, seed=4)
    score = gmm.score_fn(sde)
    z = ss.encode(score, sde, x, rtol=1e-6, atol=1e-6)
    back = ss.decode(score, sde, z, rtol=1e-6, atol=1e-6)
    assert z.shape == x.shape and back.dtype == x.dtype
    scale = x.abs().max().item()
    assert (back - x).abs().max().item() <= 1e-4 * max(scale, 1.0)
    # the latent is the one the likelihood uses
    res = ss.log_likelihood(score, sde, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(res.z, z, rtol=0, atol=1e-4 * max(z.abs().max().item(), 1.0))


def test_encode_pushes_data_to_p_T():
    # x ~ p_eps maps to z ~ p_T: check the first two moments against the mixture's closed form
    sde, gmm = ss.VPSDE(), mixture(2)
    x = data(gmm, sde, 2000, seed=8)
    z = ss.encode(gmm.score_fn(sde), sde, x)
    n = len(z)
    mean_se = gmm.covariance(sde.T, sde).diagonal().sqrt() / math.sqrt(n)
    assert ((z.mean(0) - gmm.mean(sde.T, sde)).abs() <= 4 * mean_se).all()
    torch.testing.assert_close(torch.cov(z.T), gmm.covariance(sde.T, sde), rtol=0, atol=0.08)


def _gaussian_case(dim=4, mu=0.1, std=0.4):
    means = torch.full((1, dim), mu, dtype=torch.float64)
    return ss.analytic.GaussianMixture(means, std)


def test_bits_per_dim_of_gaussian_data_closed_form():
    """Gaussian data N(mu, s^2 I) under its exact score and exact prior: the PF-ODE density at
    eps is N(alpha mu, alpha^2 s^2 + sigma^2), so bits/dim has a closed form."""
    sde, gauss = ss.VPSDE(), _gaussian_case()
    x = data(gauss, sde, 32, seed=2)
    res = ss.log_likelihood(gauss.score_fn(sde), sde, x, rtol=1e-6, atol=1e-6,
                            prior_log_prob=gauss.prior_log_prob(sde))
    alpha, sigma = sde.marginal(torch.tensor(sde.eps, dtype=torch.float64))
    var = alpha**2 * 0.4**2 + sigma**2
    log_n = -0.5 * (((x - alpha * 0.1) ** 2) / var + torch.log(2 * math.pi * var)).sum(1)
    d = x.shape[1]
    closed = -log_n / (d * math.log(2))
    # the 1e-4 nats bar, in bits/dim: 1e-4 / (D ln 2)
    torch.testing.assert_close(res.bits_per_dim(), closed, rtol=0, atol=1e-4 / (d * math.log(2)))
    # 8-bit data on [-1, 1]: bins of width 2/256 add -log2(2/256) = 7 bits; on [0, 1], 8 bits
    bpd = res.bits_per_dim()
    torch.testing.assert_close(res.bits_per_dim(num_bins=256), bpd + 7, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.bits_per_dim(num_bins=256, data_range=(0.0, 1.0)), bpd + 8, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_discrete_bits_per_dim_matches_expected_dequantised_gaussian():
    r"""Integer data u in {0..255}, dequantised x = -1 + (u + w) 2/256: with a Gaussian model,
    E_w[-log N(x)] is closed form (E (x-m)^2 = (c-m)^2 + Delta^2/12 with c the bin centre), so the
    draw-averaged bits/dim must match it within 3 standard errors of the draws."""
    sde, gauss = ss.VPSDE(), _gaussian_case(dim=3, mu=0.1, std=0.4)
    gen = torch.Generator().manual_seed(0)
    x0 = gauss.sample(40, generator=gen).clamp(-0.999, 0.999)
    u = ((x0 + 1) * 128).floor().to(torch.uint8)
    draws = 6
    res = ss.bits_per_dim(gauss.score_fn(sde), sde, u, draws=draws, generator=torch.Generator().manual_seed(1),
                          rtol=1e-6, atol=1e-6, prior_log_prob=gauss.prior_log_prob(sde))
    width = 2 / 256
    centre = -1 + width * (u.double() + 0.5)
    alpha, sigma = sde.marginal(torch.tensor(sde.eps, dtype=torch.float64))
    var = alpha**2 * 0.4**2 + sigma**2
    e_log_n = -0.5 * ((((centre - alpha * 0.1) ** 2 + width**2 / 12) / var) + torch.log(2 * math.pi * var)).sum(1)
    expected = -e_log_n / (3 * math.log(2)) + 7
    assert res.per_draw.shape == (draws, 40) and res.bpd.shape == (40,)
    assert res.nfe > 0 and (res.draw_std > 0).all()
    assert abs(res.mean.item() - expected.mean().item()) <= 3 * res.stderr.item()
    # per sample: each draw-average within 4 of its own standard errors (+ solver slack)
    per_se = res.draw_std / math.sqrt(draws)
    assert ((res.bpd - expected).abs() <= 4 * per_se + 1e-5).all()


def test_dequantize_bins_and_checks():
    u = torch.tensor([[0, 255], [128, 7]])
    x = dequantize(u, generator=torch.Generator().manual_seed(0))
    width = 2 / 256
    lower = -1 + width * u.double()
    assert x.dtype == torch.get_default_dtype()
    assert ((x.double() >= lower - 1e-7) & (x.double() < lower + width + 1e-7)).all()
    with pytest.raises(ValueError, match="u must hold integers in \\[0, 255\\]"):
        dequantize(torch.tensor([[256]]))
    with pytest.raises(ValueError, match="u must hold integers"):
        dequantize(torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="num_bins"):
        dequantize(u, num_bins=0)
    with pytest.raises(ValueError, match="data_range"):
        dequantize(u, data_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="num_bins"):
        nats_to_bits_per_dim(torch.zeros(2), 3, num_bins=-2)
    with pytest.raises(ValueError, match="draws"):
        ss.bits_per_dim(lambda x, t: x, ss.VPSDE(), u, draws=0)
