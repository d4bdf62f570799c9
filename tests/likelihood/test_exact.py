"""log_likelihood against the exact mixture density log p_eps(x), and the prior mismatch."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as ss

from .conftest import SDE_FACTORIES, data, mixture


@pytest.mark.parametrize("dim", [2, 8])
@pytest.mark.parametrize("name", list(SDE_FACTORIES))
def test_exact_score_exact_prior_matches_mixture(name, dim):
    # The accuracy bar: exact score, exact prior, exact trace, rtol=atol=1e-6, float64.
    sde = SDE_FACTORIES[name]()
    gmm = mixture(dim)
    x = data(gmm, sde, 48, seed=dim)
    res = ss.log_likelihood(
        gmm.score_fn(sde), sde, x, trace="exact", rtol=1e-6, atol=1e-6,
        prior_log_prob=gmm.prior_log_prob(sde),
    )
    truth = gmm.log_prob(x, sde.eps, sde)
    err = (res.log_p - truth).abs().mean().item()
    assert err <= 1e-4, f"{name} {dim}-D: mean |error| {err:.2e} nats"
    assert res.log_p.shape == (48,) and res.log_p.dtype == torch.float64
    torch.testing.assert_close(res.log_p, res.prior_log_p + res.delta_log_p)
    assert res.z.shape == x.shape and res.dims == dim and res.nfe > 0


class NonlinearDriftSDE(ss.SDE):
    r"""A custom (non-LinearSDE) process: VP's drift plus the nonlinear term beta(t) tanh(x).

    With the score :math:`s' = s_{VP} + 2\beta\tanh(x)/g^2` its PF-ODE field
    :math:`f' - \frac12 g^2 s'` equals VP's, so its likelihood is VP's exact one: a check of the
    generic path (Jacobian of a nonlinear drift) with a closed-form answer.
    """

    T, eps, prior_std = 1.0, 1e-5, 1.0

    def __init__(self):
        self.vp = ss.VPSDE()

    def _beta(self, x, t):
        return self.vp.beta(t).reshape(-1, *([1] * (x.dim() - 1)))

    def drift(self, x, t):
        return -0.5 * self._beta(x, t) * x + self._beta(x, t) * torch.tanh(x)

    def diffusion(self, x, t):
        return self._beta(x, t).sqrt()


@pytest.mark.parametrize("dim", [2, 8])
def test_custom_nonlinear_sde_generic_path(dim):
    sde = NonlinearDriftSDE()
    gmm = mixture(dim)
    vp_score = gmm.score_fn(sde.vp)

    def score(x, t):  # g^2 = beta, so 2 beta tanh(x) / g^2 = 2 tanh(x)
        return vp_score(x, t) + 2 * torch.tanh(x)

    x = data(gmm, sde.vp, 32, seed=5)
    res = ss.log_likelihood(
        score, sde, x, rtol=1e-6, atol=1e-6, prior_log_prob=gmm.prior_log_prob(sde.vp)
    )
    err = (res.log_p - gmm.log_prob(x, sde.eps, sde.vp)).abs().mean().item()
    assert err <= 1e-4, err


def test_float32_close_to_exact():
    sde, gmm = ss.VPSDE(), mixture(2)
    x64 = data(gmm, sde, 64)
    gmm32 = gmm.to(dtype=torch.float32)
    res = ss.log_likelihood(
        gmm32.score_fn(sde), sde, x64.float(), prior_log_prob=gmm32.prior_log_prob(sde)
    )
    assert res.log_p.dtype == torch.float32 and res.z.dtype == torch.float32
    err = (res.log_p.double() - gmm.log_prob(x64, sde.eps, sde)).abs().mean().item()
    assert err <= 2e-3, err
    hut = ss.log_likelihood(gmm32.score_fn(sde), sde, x64.float(), trace="hutchinson", probes=2,
                            generator=torch.Generator().manual_seed(0))
    assert hut.log_p.dtype == torch.float32 and torch.isfinite(hut.log_p).all()


def test_image_shaped_data_match_flat():
    # x of shape (batch, 2, 2, 2): the score reshapes to the 8-D mixture
    sde, gmm = ss.VPSDE(), mixture(8)
    flat_score = gmm.score_fn(sde)

    def score(x, t):
        return flat_score(x.flatten(1), t).reshape(x.shape)

    x = data(gmm, sde, 16)
    kw = dict(rtol=1e-5, atol=1e-5, prior_log_prob=lambda z: gmm.log_prob(z.flatten(1), sde.T, sde))
    img = ss.log_likelihood(score, sde, x.reshape(16, 2, 2, 2), **kw)
    flat = ss.log_likelihood(flat_score, sde, x, **kw)
    torch.testing.assert_close(img.log_p, flat.log_p, rtol=0, atol=1e-8)
    assert img.z.shape == (16, 2, 2, 2) and img.dims == 8


def test_chunk_size_does_not_change_exact_result():
    sde, gmm = ss.VESDE(), mixture(8)
    x = data(gmm, sde, 12)
    kw = dict(rtol=1e-4, atol=1e-4)
    ref = ss.log_likelihood(gmm.score_fn(sde), sde, x, **kw)
    for chunk in (3, 8):
        res = ss.log_likelihood(gmm.score_fn(sde), sde, x, chunk_size=chunk, **kw)
        torch.testing.assert_close(res.log_p, ref.log_p, rtol=0, atol=1e-10)
        assert res.nfe == ref.nfe


def test_nfe_counts_score_evaluations():
    sde, gmm = ss.SubVPSDE(), mixture(2)
    calls = []
    inner = gmm.score_fn(sde)

    def score(x, t):
        calls.append(x.shape)
        return inner(x, t)

    x = data(gmm, sde, 8)
    for trace in ("exact", "hutchinson"):
        calls.clear()
        res = ss.log_likelihood(score, sde, x, trace=trace, probes=3, chunk_size=2)
        assert res.nfe == len(calls) > 10
    calls.clear()
    ss.encode(score, sde, x)
    assert len(calls) > 10


def test_sample_result_independent_of_batch_mates():
    sde, gmm = ss.VPSDE(), mixture(2)
    x = data(gmm, sde, 32)
    kw = dict(rtol=1e-6, atol=1e-6, prior_log_prob=gmm.prior_log_prob(sde))
    full = ss.log_likelihood(gmm.score_fn(sde), sde, x, **kw)
    alone = ss.log_likelihood(gmm.score_fn(sde), sde, x[:3], **kw)
    # different step sequences, same ODE: agreement to the solver tolerance
    torch.testing.assert_close(alone.log_p, full.log_p[:3], rtol=0, atol=1e-4)


# ---- the prior mismatch -------------------------------------------------------------------------
MISMATCH_CASES = {
    # small sigma_max / beta_max: p_T far from the Gaussian prior, so the mismatch is large
    "ve_sigma_max_6": lambda: ss.VESDE(sigma_min=0.01, sigma_max=6.0),
    "vp_beta_max_4": lambda: ss.VPSDE(beta_min=0.1, beta_max=4.0),
    "vp_default": lambda: ss.VPSDE(),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MISMATCH_CASES))
def test_gaussian_prior_error_is_the_prior_mismatch(case):
    r"""With the default N(0, prior_std^2) prior, the error at each x is
    :math:`\log\pi(z) - \log p_T(z)`; since :math:`z \sim p_T` when :math:`x \sim p_\varepsilon`,
    its mean over data is :math:`-\mathrm{KL}(p_T \| \pi)`, estimated independently by Monte
    Carlo on exact samples of :math:`p_T` (no ODE)."""
    sde, gmm = MISMATCH_CASES[case](), mixture(2)
    # enough points that the mean error resolves a 0.04-nat KL (error std ~0.3 nats per point)
    x = data(gmm, sde, 2000 if case != "vp_default" else 300, seed=11)
    res = ss.log_likelihood(gmm.score_fn(sde), sde, x, rtol=1e-6, atol=1e-6)
    err = res.log_p - gmm.log_prob(x, sde.eps, sde)
    predicted = sde.prior_log_prob(res.z) - gmm.log_prob(res.z, sde.T, sde)
    gap = (err - predicted).abs()
    # the bar is the mean; single tail points of a 2000-batch (shared steps) reach ~1e-3
    assert gap.mean().item() <= 1e-4 and gap.max().item() <= 5e-3

    gen = torch.Generator().manual_seed(12)
    zT = gmm.sample(200_000, generator=gen, t=sde.T, sde=sde)
    log_ratio = sde.prior_log_prob(zT) - gmm.log_prob(zT, sde.T, sde)
    neg_kl, kl_se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(len(zT))
    mean_err, err_se = err.mean().item(), err.std().item() / math.sqrt(len(err))
    assert neg_kl <= 0
    assert abs(mean_err - neg_kl) <= 3 * math.hypot(kl_se, err_se) + 1e-6, (mean_err, neg_kl)
    if case != "vp_default":
        assert neg_kl < -0.03  # these cases really test a visible mismatch (KL 0.04 and 0.34 nats)
        assert mean_err < -3 * err_se  # and the likelihoods themselves show it


def test_progress_bar_does_not_change_the_result():
    sde, gmm = ss.VPSDE(), mixture(2)
    x = data(gmm, sde, 8)
    quiet = ss.log_likelihood(gmm.score_fn(sde), sde, x)
    shown = ss.log_likelihood(gmm.score_fn(sde), sde, x, progress=True)
    assert torch.equal(quiet.log_p, shown.log_p) and quiet.nfe == shown.nfe


def test_network_score_exact_and_hutchinson_agree_and_leave_params_alone():
    # An untrained MLP "score": any smooth field works for the trace identities.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.SiLU(), torch.nn.Linear(32, 3)).double()

    def score(x, t):
        return net(torch.cat([x, t[:, None]], dim=1))

    sde = ss.VPSDE()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = ss.log_likelihood(score, sde, x)
    many = ss.log_likelihood(score, sde, x.repeat(64, 1), trace="hutchinson", probes=4,
                             generator=torch.Generator().manual_seed(2))
    est = many.log_p.reshape(64, 4)
    se = est.std(0) / 8
    assert ((est.mean(0) - exact.log_p).abs() <= 4 * se + 1e-4).all()
    assert all(p.grad is None for p in net.parameters())
    assert not exact.log_p.requires_grad


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(
    dim=st.integers(1, 3),
    n_components=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["vp", "ve", "subvp"]),
    scale=st.floats(0.3, 3.0),
)
def test_random_mixtures_and_schedules_match_exact_density(dim, n_components, seed, kind, scale):
    """Property: for any mixture and SDE parameters, exact score + exact prior => exact log p_eps."""
    gen = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(n_components, dim, generator=gen, dtype=torch.float64)
    stds = 0.2 + torch.rand(n_components, dim, generator=gen, dtype=torch.float64)
    weights = 0.2 + torch.rand(n_components, generator=gen, dtype=torch.float64)
    gmm = ss.analytic.GaussianMixture(means, stds, weights)
    if kind == "vp":
        sde = ss.VPSDE(beta_min=0.05 + scale / 10, beta_max=5 + 5 * scale)
    elif kind == "subvp":
        sde = ss.SubVPSDE(beta_min=0.1, beta_max=10 * scale)
    else:
        sde = ss.VESDE(sigma_min=0.005 * scale, sigma_max=10 * scale)
    x = data(gmm, sde, 16, seed=seed)
    res = ss.log_likelihood(gmm.score_fn(sde), sde, x, rtol=1e-6, atol=1e-6,
                            prior_log_prob=gmm.prior_log_prob(sde))
    err = (res.log_p - gmm.log_prob(x, sde.eps, sde)).abs().mean().item()
    assert err <= 1e-4, err
