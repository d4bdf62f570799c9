"""nll_bound: the reverse-SDE model's variational bound, checked against exact answers.

Monte-Carlo tolerances: 4 standard errors of the mean (``stderr`` is conservative for the
stratified draws) plus the stated deterministic slack.
"""

import math

import pytest
import torch
from scipy.integrate import quad

import scoresde as ss

from .conftest import SDE_FACTORIES, custom_linear_sde


def ring_points(n=200, seed=0):
    gmm = ss.analytic.ring_mixture()
    return gmm, gmm.sample(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(SDE_FACTORIES))
def test_exact_score_and_prior_make_the_bound_tight(name):
    # With s = grad log p_t and pi = p_T the bound equals -log p_0(x) point by point, up to the
    # omitted [0, eps] piece (below 2e-3 nats here: VE's sigma(eps) = 0.01 is the largest).
    sde = SDE_FACTORIES[name]()
    gmm, x = ring_points()
    res = ss.nll_bound(gmm.score_fn(sde), sde, x, samples=4096, prior_log_prob=gmm.prior_log_prob(sde),
                       generator=torch.Generator().manual_seed(1))
    true_nll = -ss.MixtureDataset(gmm, 1).log_prob(x)
    err = float((res.nll - true_nll).mean())
    se = float(res.stderr.square().sum().sqrt()) / x.shape[0]
    assert abs(err) < 4 * se + 2e-3, f"{name}: bound - true NLL = {err:+.4f} (se {se:.4f})"
    assert se < 0.05  # the check has teeth: dropping the drift term alone would be off by ~D * 5 nats
    assert res.nll.shape == (200,) and res.nll.dtype == torch.float64 and res.dims == 2 and res.samples == 4096


@pytest.mark.parametrize("name", ["vp", "ve", "custom_linear"])
def test_excess_equals_likelihood_weighted_score_error(name):
    # s = s* + c for a constant c: averaged over the data the bound rises by exactly
    # 1/2 |c|^2 int_eps^T g(t)^2 dt (DSM = ESM + const). Same draws for both, so the paired
    # difference is precise.
    sde = SDE_FACTORIES[name]()
    gmm, x = ring_points(400)
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    exact = gmm.score_fn(sde)

    def bound(score):
        return ss.nll_bound(score, sde, x, samples=512, prior_log_prob=gmm.prior_log_prob(sde),
                            generator=torch.Generator().manual_seed(7)).nll

    diff = bound(lambda y, t: exact(y, t) + c) - bound(exact)
    g2 = quad(lambda t: float(sde.g(torch.tensor([t], dtype=torch.float64)).square()), sde.eps, sde.T, limit=200)[0]
    expected = 0.5 * float(c.square().sum()) * g2
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert abs(float(diff.mean()) - expected) < 4 * se + 1e-3 * expected, (
        f"{name}: excess {float(diff.mean()):.4f} vs {expected:.4f} (se {se:.4f})"
    )


def test_gaussian_data_closed_form():
    # Data N(0, I) under VP: p_t = N(0, I) for all t, score -x, and the bound with the N(0, I)
    # prior is -log N(x; 0, I) exactly, per point. 16-D, float32 input keeps float32.
    sde = ss.VPSDE()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    res = ss.nll_bound(lambda y, t: -y, sde, x, samples=2048, generator=torch.Generator().manual_seed(2))
    true_nll = 0.5 * x.square().sum(1) + 8 * math.log(2 * math.pi)
    err = (res.nll - true_nll).double()
    assert res.nll.dtype == torch.float32
    assert float(err.abs().max()) < 5 * float(res.stderr.max()) + 1e-3
    assert abs(float(err.mean())) < 4 * float(res.stderr.square().sum().sqrt()) / 64 + 1e-3
    torch.testing.assert_close(res.bits_per_dim(), res.nll / (16 * math.log(2)))


def test_same_generator_same_result_and_batch_shapes():
    sde = ss.SubVPSDE()
    x = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # image-like dims
    a = ss.nll_bound(lambda y, t: -y, sde, x, samples=50, chunk_size=16, generator=torch.Generator().manual_seed(3))
    b = ss.nll_bound(lambda y, t: -y, sde, x, samples=50, chunk_size=16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.nll, b.nll, rtol=0, atol=0)
    assert a.nll.shape == (3,) and a.dims == 4 and bool((a.stderr > 0).all())


class _Cubic(ss.SDE):
    T, eps, prior_std = 1.0, 1e-3, 1.0

    def drift(self, x, t):
        return -(x**3)

    def diffusion(self, x, t):
        return torch.ones_like(t)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(samples=0), "samples must be an integer >= 1"),
        (dict(samples=2.5), "samples must be an integer >= 1"),
        (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
        (dict(eps=0.0), "eps must be a number in \\(0, 1\\)"),
        (dict(eps=2.0), "eps must be a number in"),
        (dict(prior_log_prob="normal"), "prior_log_prob must be callable"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=match):
        ss.nll_bound(lambda y, t: -y, custom_linear_sde(), x, **kwargs)


def test_bad_sde_data_and_score():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="sde must be a LinearSDE"):
        ss.nll_bound(lambda y, t: -y, _Cubic(), x)
    with pytest.raises(ValueError, match="x must be finite"):
        ss.nll_bound(lambda y, t: -y, ss.VPSDE(), torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="score_fn must be callable"):
        ss.nll_bound(None, ss.VPSDE(), x)
