"""The analytic mixture: normalised, its score is the gradient of its log density, and p_t
solves the Fokker-Planck equation of the SDE."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as ss

F64 = torch.float64


def sdes():
    return {
        "vp": ss.VPSDE(),
        "vp_cosine": ss.VPSDE(schedule="cosine"),
        "subvp": ss.SubVPSDE(),
        "ve": ss.VESDE(0.05, 10.0),
        "linear": ss.LinearSDE(lambda t: -0.5 - t, lambda t: (1.0 + 2 * t).sqrt()),
    }


def mixture():
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], dtype=F64)
    stds = torch.tensor([[0.5, 0.8], [0.3, 0.3], [1.0, 0.4]], dtype=F64)
    return ss.analytic.GaussianMixture(means, stds, torch.tensor([0.2, 0.5, 0.3], dtype=F64))


@pytest.mark.parametrize("name", ["vp", "ve", "linear"])
@pytest.mark.parametrize("t", [0.0, 0.05, 0.5])
def test_density_integrates_to_one(name, t):
    sde, gmm = sdes()[name], mixture()
    _, sigma = sde.marginal(torch.tensor(t, dtype=F64))
    half = 6.0 + 8 * float(sigma)  # the box covers every component by > 8 of its stds
    n = 801
    u = torch.linspace(-half, half, n, dtype=F64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    p = gmm.log_prob(grid, t, sde).exp().reshape(n, n)
    mass = torch.trapezoid(torch.trapezoid(p, u, dim=1), u)
    assert float(mass) == pytest.approx(1.0, abs=1e-6)


@given(name=st.sampled_from(list(sdes())), t=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_score_equals_autograd_gradient_of_log_prob(name, t, seed):
    sde, gmm = sdes()[name], mixture()
    x = 3 * torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x, t, sde).sum(), x)
    torch.testing.assert_close(gmm.score(x.detach(), t, sde), grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(sdes()))
def test_fokker_planck_equation(name):
    """dp/dt = -div(f(t) x p) + 1/2 g(t)^2 lap p = -f (D p + x . grad p) + 1/2 g^2 lap p.

    Central differences with step h_t = 1e-5 in t and h_x = 1e-3 in x (float64): truncation
    errors ~1e-10 and ~1e-6 relative; we require agreement to 1e-5 of the largest term.
    """
    sde, gmm = sdes()[name], mixture()
    gen = torch.Generator().manual_seed(0)
    x = 2.5 * torch.randn(32, 2, dtype=F64, generator=gen)
    t = 0.05 + 0.9 * torch.rand(32, dtype=F64, generator=gen)

    def p(x, t):
        return gmm.log_prob(x, t, sde).exp()

    ht, hx = 1e-5, 1e-3
    dp_dt = (p(x, t + ht) - p(x, t - ht)) / (2 * ht)
    grad = torch.zeros_like(x)
    lap = torch.zeros(32, dtype=F64)
    for i in range(2):
        e = torch.zeros(2, dtype=F64)
        e[i] = hx
        up, mid, down = p(x + e, t), p(x, t), p(x - e, t)
        grad[:, i] = (up - down) / (2 * hx)
        lap += (up - 2 * mid + down) / hx**2
    f, g = sde.f(t), sde.g(t)
    rhs = -f * (2 * p(x, t) + (x * grad).sum(1)) + 0.5 * g.square() * lap
    scale = torch.maximum(dp_dt.abs(), rhs.abs()).max()
    assert ((dp_dt - rhs).abs() / scale).max() < 1e-5


def test_moments_and_samples_agree():
    sde, gmm = ss.VPSDE(), mixture()
    gen = torch.Generator().manual_seed(1)
    n = 20000
    for t in (None, 0.4):
        x = gmm.sample(n, generator=gen, t=t, sde=sde if t is not None else None)
        mean, cov = gmm.mean(t, sde), gmm.covariance(t, sde)
        se = (cov.diagonal() / n).sqrt()
        assert ((x.mean(0) - mean).abs() <= 4 * se).all()
        torch.testing.assert_close(torch.cov(x.T), cov, rtol=0.05, atol=0.05)


def test_sample_components_follow_the_weights():
    gmm = ss.analytic.ring_mixture()
    _, k = gmm.sample(36000, generator=torch.Generator().manual_seed(2), return_components=True)
    counts = torch.bincount(k, minlength=8).to(F64)
    expected = 36000 * gmm.weights
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3  # chi-square with 7 dof, p = 0.001


def test_composes_with_torch_func_transforms():
    sde, gmm = ss.VPSDE(), mixture()
    x = torch.randn(5, 2, dtype=F64)
    t = torch.linspace(0.1, 0.9, 5, dtype=F64)
    # vmap over (x, t) equals the batched call
    per_sample = torch.func.vmap(lambda xi, ti: gmm.score(xi, ti, sde))(x, t)
    torch.testing.assert_close(per_sample, gmm.score(x, t, sde))
    # jacrev of the score is the Hessian of log p: symmetric, and matches autograd's hessian
    hess = torch.func.vmap(torch.func.jacrev(lambda xi, ti: gmm.score(xi, ti, sde)))(x, t)
    torch.testing.assert_close(hess, hess.transpose(-1, -2))
    ref = torch.autograd.functional.hessian(lambda xi: gmm.log_prob(xi, t[0], sde), x[0])
    torch.testing.assert_close(hess[0], ref)
    # jvp: directional derivative of log p equals score . v
    v = torch.randn(2, dtype=F64)
    _, dlogp = torch.func.jvp(lambda xi: gmm.log_prob(xi, t[0], sde), (x[0],), (v,))
    torch.testing.assert_close(dlogp, gmm.score(x[0], t[0], sde) @ v)


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    sde, gmm = ss.SubVPSDE(), mixture()
    fn = torch.compile(gmm.score_fn(sde), fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 2, dtype=F64)
    t = torch.full((6,), 0.3, dtype=F64)
    torch.testing.assert_close(fn(x, t), gmm.score(x, t, sde))


def test_prior_log_prob_is_log_p_T():
    gmm = mixture()
    gaps = []
    for sigma_max in (10.0, 100.0):
        sde = ss.VESDE(0.05, sigma_max)
        z = sigma_max * torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(gmm.prior_log_prob(sde)(z), gmm.log_prob(z, 1.0, sde))
        gaps.append(float((gmm.prior_log_prob(sde)(z) - sde.prior_log_prob(z)).abs().mean()))
    # the mixture's p_T approaches the Gaussian prior N(0, sigma_max^2) as sigma_max grows
    assert gaps[1] < 0.01 and gaps[1] < gaps[0] / 5  # the gap falls like 1 / sigma_max


def test_float32_and_device_follow_the_input():
    sde, gmm = ss.VPSDE(), mixture()
    x = torch.randn(3, 2, dtype=torch.float32)
    s = gmm.score(x, torch.full((3,), 0.5), sde)
    assert s.dtype == torch.float32 and s.device == x.device
    torch.testing.assert_close(s, gmm.score(x.double(), 0.5, sde).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(means=torch.zeros(3)), "means must have shape"),
        (dict(means=torch.zeros(2, 2), stds=-1.0), "stds must be positive"),
        (dict(means=torch.zeros(2, 2), stds=torch.ones(3)), "stds must be a number"),
        (dict(means=torch.zeros(2, 2), weights=torch.tensor([1.0, 0.0])), "weights must be positive"),
        (dict(means=torch.zeros(2, 2), weights=torch.ones(3)), "weights must have shape"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ss.analytic.GaussianMixture(**kwargs)


def test_bad_inputs_are_named():
    sde, gmm = ss.VPSDE(), mixture()
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        gmm.log_prob(torch.zeros(4, 3, dtype=F64), 0.5, sde)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        gmm.score(torch.zeros(4, 2, dtype=torch.int64), 0.5, sde)
    with pytest.raises(ValueError, match="t must be a scalar or have x's batch shape"):
        gmm.score(torch.zeros(4, 2, dtype=F64), torch.full((3,), 0.5, dtype=F64), sde)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        gmm.score(torch.zeros(4, 2, dtype=F64), 1.5, sde)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        gmm.sample(-1)
    assert math.isfinite(float(gmm.log_prob(torch.zeros(1, 2, dtype=F64), 0.0, sde)))
