"""The forward and reverse processes simulated with torchsde agree with the closed forms.

Monte-Carlo tolerances: with N paths, the sample mean has standard error std/sqrt(N) and the
sample std has relative standard error about 1/sqrt(2N); we allow 4 standard errors plus the
Euler scheme's O(dt) bias (dt = 1e-3 here, below 1% of the variance for beta <= 20).
"""

import math

import pytest
import torch

import scoresde as ss

F64 = torch.float64
N = 4000


def mc_check(samples, mean, std, bias=0.01):
    """Assert the sample mean and std agree with (mean, std) within 4 standard errors + bias."""
    n = samples.shape[0]
    m, s = samples.mean(0), samples.std(0)
    assert ((m - mean).abs() <= 4 * std / math.sqrt(n) + bias * std).all(), (m, mean)
    assert ((s / std - 1).abs() <= 4 / math.sqrt(2 * n) + bias).all(), (s, std)


@pytest.mark.parametrize(
    "sde",
    [ss.VPSDE(), ss.VPSDE(schedule="cosine"), ss.SubVPSDE(), ss.VESDE(0.01, 5.0)],
    ids=["vp", "vp_cosine", "subvp", "ve"],
)
def test_forward_sde_simulation_matches_marginals(sde):
    x0 = torch.tensor([1.5, -0.5], dtype=F64).expand(N, 2).contiguous()
    times = [0.0, 0.3, 0.9]
    _, sigma0 = sde.marginal(torch.tensor(0.0, dtype=F64))
    start = x0 + sigma0 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    xs = ss.sde.torchsde_integrate(sde, start, times, dt=1e-3, seed=0)
    for t, xt in zip(times[1:], xs[1:], strict=True):
        mean, std = sde.marginal_prob(x0[:1], torch.tensor(t, dtype=F64))
        mc_check(xt, mean[0], std.expand(2))


class OrnsteinUhlenbeck(ss.SDE):
    """dx = -theta x dt + s dW written as a user's nonlinear-style SDE (drift and diffusion only)."""

    T = 1.0
    prior_std = 1.0

    def __init__(self, theta=2.0, s=1.0):
        self.theta, self.s = theta, s

    def drift(self, x, t):
        return -self.theta * x

    def diffusion(self, x, t):
        return torch.full_like(x, self.s)


class GeometricBrownianMotion(ss.SDE):
    """dx = mu x dt + s x dW: E x_t = x0 e^{mu t}, Var x_t = x0^2 e^{2 mu t}(e^{s^2 t} - 1)."""

    T = 1.0
    state_dependent_diffusion = True

    def __init__(self, mu=0.3, s=0.4):
        self.mu, self.s = mu, s

    def drift(self, x, t):
        return self.mu * x

    def diffusion(self, x, t):
        return self.s * x


def test_custom_sde_simulation_matches_closed_form():
    ou = OrnsteinUhlenbeck()
    x0 = torch.full((N, 1), 2.0, dtype=F64)
    xT = ss.sde.torchsde_integrate(ou, x0, [0.0, 1.0], dt=1e-3, seed=2)[-1]
    mc_check(xT, 2.0 * math.exp(-2.0), math.sqrt((1 - math.exp(-4.0)) / 4.0))

    gbm = GeometricBrownianMotion()
    xT = ss.sde.torchsde_integrate(gbm, torch.ones(N, 1, dtype=F64), [0.0, 1.0], dt=1e-3, seed=3)[-1]
    mc_check(xT, math.exp(0.3), math.sqrt(math.exp(0.6) * (math.exp(0.16) - 1)), bias=0.02)


def test_custom_sde_says_what_it_cannot_do():
    ou = OrnsteinUhlenbeck()
    with pytest.raises(ss.sde.NoTransitionKernelError, match="no closed-form transition kernel"):
        ou.marginal_prob(torch.zeros(2, 1), 0.5)
    with pytest.raises(ValueError, match="sde must be a LinearSDE"):
        ss.analytic.ring_mixture().log_prob(torch.zeros(2, 2, dtype=F64), 0.5, ou)

    class NoPrior(ss.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return torch.ones_like(x)

    with pytest.raises(ss.sde.NoTransitionKernelError, match="prior_std"):
        NoPrior().prior_sample((2, 1))


def test_state_dependent_diffusion_gets_the_divergence_term():
    gbm = GeometricBrownianMotion()
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(gbm.diffusion_divergence(x, torch.tensor(0.5)), 2 * 0.4**2 * x)
    # reverse drift = f - d(g^2)/dx - g^2 s ; with s = 0 only the first two terms remain
    rev = gbm.reverse(lambda x, t: torch.zeros_like(x))
    torch.testing.assert_close(rev.drift(x, torch.full((5,), 0.5)), 0.3 * x - 2 * 0.4**2 * x)
    pf = gbm.reverse(lambda x, t: torch.zeros_like(x), probability_flow=True)
    torch.testing.assert_close(pf.drift(x, torch.full((5,), 0.5)), 0.3 * x - 0.4**2 * x)
    assert torch.equal(pf.diffusion(x, 0.5), torch.zeros_like(x))


def test_reverse_discretization_includes_the_divergence_term():
    """The reverse chain of SDE.discretize: F_rev = F - w (G^2 s + d(g^2)/dx dt), as the continuous drift."""
    gbm = GeometricBrownianMotion()
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    t, dt = torch.full((5,), 0.5, dtype=F64), torch.tensor(0.01, dtype=F64)
    score = -x / 3  # any score: its term is G^2 s = g^2 dt s
    g2 = (0.4 * x) ** 2
    for pf, w in [(False, 1.0), (True, 0.5)]:
        rev_f, rev_G = gbm.reverse(lambda x, t: -x / 3, probability_flow=pf).discretize(x, t, dt)
        torch.testing.assert_close(rev_f, 0.3 * x * dt - w * (g2 * dt * score + 2 * 0.4**2 * x * dt))
        torch.testing.assert_close(rev_G, torch.zeros_like(x) if pf else 0.4 * x * dt.sqrt())


def test_diffusion_divergence_keeps_a_graph_only_when_asked():
    gbm = GeometricBrownianMotion()
    x = torch.randn(4, 2, dtype=F64)
    t = torch.tensor(0.5, dtype=F64)
    assert not gbm.diffusion_divergence(x, t).requires_grad  # grad mode on, x needs none: no graph kept
    with torch.no_grad():
        assert not gbm.diffusion_divergence(x, t).requires_grad
    xr = x.clone().requires_grad_(True)
    div = gbm.diffusion_divergence(xr, t)  # a differentiable sample: the graph reaches x
    (grad,) = torch.autograd.grad(div.sum(), xr)
    torch.testing.assert_close(grad, torch.full_like(x, 2 * 0.4**2))


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VESDE(0.01, 20.0)], ids=["vp", "ve"])
def test_reverse_sde_with_exact_score_recovers_the_data_distribution(sde):
    # A 1-D Gaussian target: the reverse SDE run from the prior must end at N(m, s^2).
    gmm = ss.analytic.GaussianMixture(torch.tensor([[1.5]], dtype=F64), 0.5)
    rev = sde.reverse(gmm.score_fn(sde))
    gen = torch.Generator().manual_seed(4)
    x_T = gmm.sample(N, generator=gen, t=sde.T, sde=sde)  # exact p_T, so only the solver errs
    x_eps = ss.sde.torchsde_integrate(rev, x_T, [sde.T, sde.eps], dt=1e-3, seed=5)[-1]
    _, sigma_eps = sde.marginal(torch.tensor(sde.eps, dtype=F64))
    mc_check(x_eps, 1.5, math.sqrt(0.25 + float(sigma_eps) ** 2), bias=0.02)


def test_probability_flow_satisfies_the_continuity_equation():
    # d/dt log p_t = -div v - v . grad log p_t for the PF-ODE velocity v (exact mixture score).
    sde = ss.SubVPSDE()
    gmm = ss.analytic.ring_mixture(4, radius=2.0, std=0.5)
    pf = sde.reverse(gmm.score_fn(sde), probability_flow=True)
    x = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(6)) * 2
    t, h = torch.full((16,), 0.3, dtype=F64), 1e-5
    dlogp_dt = (gmm.log_prob(x, t + h, sde) - gmm.log_prob(x, t - h, sde)) / (2 * h)
    jac = torch.func.vmap(torch.func.jacrev(lambda xi, ti: pf.drift(xi[None], ti[None])[0]))(x, t)
    div = jac.diagonal(dim1=-2, dim2=-1).sum(-1)
    v = pf.drift(x, t)
    rhs = -div - (v * gmm.score(x, t, sde)).sum(-1)
    torch.testing.assert_close(dlogp_dt, rhs, rtol=1e-6, atol=1e-6)
