"""frame='scaled': the likelihood ODE of a linear SDE solved in EDM's variables (x / alpha_t in
sigma_t / alpha_t) gives the same exact log-density as the data frame, with the same probes and
standard errors, and the mapped-back latent; VE is unchanged; bad frames are refused by name."""

from __future__ import annotations

import pytest
import torch

import scoresde as ss
from scoresde.errors import ArgumentError
from scoresde.likelihood.frame import ScaledFrameSDE, scaled_score


def linear_sdes():
    return [ss.VPSDE(), ss.SubVPSDE(), ss.VPSDE(schedule="cosine"),
            ss.LinearSDE(lambda t: -0.5 * (0.1 + 9.9 * t), lambda t: (0.1 + 9.9 * t).sqrt())]


@pytest.mark.parametrize("sde", linear_sdes(), ids=["vp", "subvp", "vp_cosine", "linear_sde"])
def test_scaled_frame_gives_the_exact_log_density(sde):
    """With the true score and the exact p_T as prior only the solver errs: both frames land on the
    mixture's closed-form log p_eps within 2e-5 nats at rtol = atol = 1e-7 (measured 1.5e-6 to 4.5e-6),
    and the latent is the data frame's."""
    gmm = ss.analytic.random_mixture(dim=4, seed=0).to(dtype=torch.float64)
    x = gmm.sample(48, generator=torch.Generator().manual_seed(0), t=sde.eps, sde=sde)
    exact = gmm.log_prob(x, sde.eps, sde)
    kw = dict(rtol=1e-7, atol=1e-7, prior_log_prob=gmm.prior_log_prob(sde))
    data = ss.log_likelihood(gmm.score_fn(sde), sde, x, **kw)
    scaled = ss.log_likelihood(gmm.score_fn(sde), sde, x, frame="scaled", **kw)
    for res in (data, scaled):
        assert (res.log_p - exact).abs().max() < 2e-5
        torch.testing.assert_close(res.prior_log_p + res.delta_log_p, res.log_p, rtol=0, atol=1e-10)
    torch.testing.assert_close(scaled.z, data.z, rtol=0, atol=1e-5)
    torch.testing.assert_close(scaled.prior_log_p, kw["prior_log_prob"](scaled.z), rtol=1e-12, atol=1e-10)


def test_scaled_frame_hutchinson_same_probes_and_standard_errors():
    """The probes come from the generator in the same order, and the change of variables is a
    constant shift per point, so the k-probe estimates agree to the solver's tolerance and so do
    their standard errors."""
    sde = ss.VPSDE()
    gmm = ss.analytic.random_mixture(dim=8, seed=1).to(dtype=torch.float64)
    x = gmm.sample(40, generator=torch.Generator().manual_seed(3), t=sde.eps, sde=sde)
    runs = [ss.log_likelihood(gmm.score_fn(sde), sde, x, trace="hutchinson", probes=4, rtol=1e-7, atol=1e-7,
                              frame=frame, generator=torch.Generator().manual_seed(7)) for frame in ("data", "scaled")]
    torch.testing.assert_close(runs[1].log_p, runs[0].log_p, rtol=0, atol=1e-4)
    torch.testing.assert_close(runs[1].standard_error, runs[0].standard_error, rtol=0, atol=1e-4)
    assert runs[0].standard_error.min() > 1e-2  # the estimates do differ between probes


def test_ve_scaled_frame_is_the_data_frame():
    sde = ss.VESDE()
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float64)
    x = gmm.sample(32, generator=torch.Generator().manual_seed(0), t=sde.eps, sde=sde)
    a, b = (ss.log_likelihood(gmm.score_fn(sde), sde, x, frame=f, rtol=1e-5, atol=1e-5) for f in ("data", "scaled"))
    assert torch.equal(a.log_p, b.log_p) and a.nfe == b.nfe


def test_scaled_frame_sde_is_drift_free_with_the_same_log_snr():
    """x_hat = x / alpha_t has alpha = 1 and sigma = sigma_t / alpha_t; its g^2 is d sigma_hat^2/dt
    (checked against a central difference) and its log-SNR and inverse are the SDE's."""
    sde = ss.VPSDE()
    hat = ScaledFrameSDE(sde)
    t = torch.tensor([0.01, 0.3, 0.7, 0.95], dtype=torch.float64)
    alpha, sigma = sde.marginal(t)
    one, sig_hat = hat.marginal(t)
    torch.testing.assert_close(one, torch.ones_like(t))
    torch.testing.assert_close(sig_hat, sigma / alpha)
    h = 1e-6
    dvar = (hat.marginal(t + h)[1] ** 2 - hat.marginal(t - h)[1] ** 2) / (2 * h)
    torch.testing.assert_close(hat.g(t) ** 2, dvar, rtol=1e-6, atol=0)
    torch.testing.assert_close(hat.log_snr(t), sde.log_snr(t))
    torch.testing.assert_close(hat.t_from_log_snr(sde.log_snr(t)), t)
    assert hat.alpha_is_one and float(hat.f(0.5)) == 0.0


def test_scaled_score_is_the_score_of_the_scaled_state():
    """s_hat(x_hat, t) = grad log of p_t(alpha x_hat) alpha^D = alpha s(alpha x_hat, t)."""
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float64)
    t = torch.full((16,), 0.4, dtype=torch.float64)
    alpha = float(sde.marginal(t[:1])[0])
    x_hat = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_()
    log_p_hat = gmm.log_prob(alpha * x_hat, 0.4, sde).sum()
    (want,) = torch.autograd.grad(log_p_hat, x_hat)
    torch.testing.assert_close(scaled_score(gmm.score_fn(sde), sde)(x_hat.detach(), t), want)


def test_bad_frame_is_refused_by_name():
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float64)
    x = gmm.sample(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ArgumentError, match="frame must be one of 'data', 'scaled'; got 'edm'"):
        ss.log_likelihood(gmm.score_fn(sde), sde, x, frame="edm")

    class Custom(ss.SDE):
        T = 1.0
        eps = 1e-5
        prior_std = 1.0

        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return torch.ones_like(x)

    with pytest.raises(ArgumentError, match="frame='scaled' needs a linear SDE"):
        ss.log_likelihood(lambda v, t: -v, Custom(), x, frame="scaled")
