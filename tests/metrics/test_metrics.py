"""Metrics checked against exact values and against what they are meant to catch."""

import math

import pytest
import torch

import scoresde as ss
from scoresde import metrics

GMM = ss.analytic.ring_mixture()


def _true(n, seed):
    return GMM.sample(n, generator=torch.Generator().manual_seed(seed))


def test_sliced_wasserstein_exact_cases():
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(metrics.sliced_wasserstein(x, x)) == 0.0
    # a shift by mu: every sorted 1-D projection moves by theta.mu, so SW2^2 = mean (theta.mu)^2 -> |mu|^2 / d
    mu = torch.tensor([2.0, -1.0, 0.5, 1.0], dtype=torch.float64)
    sw = float(metrics.sliced_wasserstein(x, x + mu, n_projections=4000))
    assert sw == pytest.approx(float(mu.norm()) / 2.0, rel=0.03)
    # p = 1 on a 1-D shift is the shift
    y = x[:, :1]
    assert float(metrics.sliced_wasserstein(y, y + 0.7, p=1)) == pytest.approx(0.7, rel=1e-9)
    # unequal sizes use quantiles and stay close to the equal-size value
    a, b = _true(2000, 1), _true(3000, 2)
    assert float(metrics.sliced_wasserstein(a, b)) < 0.3


def test_sliced_wasserstein_is_reproducible_and_seeded():
    a, b = _true(500, 1), _true(500, 2)
    assert float(metrics.sliced_wasserstein(a, b, seed=3)) == float(metrics.sliced_wasserstein(a, b, seed=3))


def test_mmd_and_energy_distance():
    a, b = _true(800, 1), _true(800, 2)
    far = a * 1.5
    assert abs(float(metrics.mmd(a, b))) < 0.01
    assert float(metrics.mmd(a, far)) > 10 * abs(float(metrics.mmd(a, b)))
    assert abs(float(metrics.energy_distance(a, b))) < 0.05
    assert float(metrics.energy_distance(a, far)) > 0.5
    # energy distance of 1-D point masses at 0 and d: 2|d| - 0 - 0 (within-set distances vanish)
    z = torch.zeros(10, 1, dtype=torch.float64)
    e = float(metrics.energy_distance(z, z + 3.0))
    assert e == pytest.approx(6.0, rel=1e-9)


def test_dispersion_and_mode_weights_catch_what_they_should():
    x = _true(20000, 3)
    assert float(metrics.dispersion(x, GMM)) == pytest.approx(1.0, abs=0.03)
    assert float(metrics.mode_weight_tv(x, GMM)) < 0.02
    # samples blown up around their modes by 1.5: dispersion ~ 2.25; collapsed onto the modes: ~0
    k = metrics.assign(x, GMM)
    wide = GMM.means[k] + 1.5 * (x - GMM.means[k])
    assert float(metrics.dispersion(wide, GMM)) == pytest.approx(2.25, rel=0.05)
    assert float(metrics.dispersion(GMM.means[k], GMM)) == 0.0
    # all samples in one mode: TV = 1 - w_k
    one = GMM.means[5].expand(100, 2)
    assert float(metrics.mode_weight_tv(one, GMM)) == pytest.approx(1 - float(GMM.weights[5]), rel=1e-12)
    # evened-out weights are caught by the chi-square test; true ones pass
    even = ss.analytic.ring_mixture(weights=torch.ones(8)).sample(4000, generator=torch.Generator().manual_seed(4))
    assert metrics.occupancy_chi2(even, GMM).p_value < 1e-6
    assert metrics.occupancy_chi2(_true(4000, 5), GMM).p_value > 1e-3


def test_chi2_pools_sparse_components():
    gmm = ss.analytic.random_mixture(16)
    x = gmm.sample(4000, generator=torch.Generator().manual_seed(0))
    res = metrics.occupancy_chi2(x, gmm)
    assert res.dof < gmm.n_components - 1  # the component expecting < 5 samples was pooled
    assert res.p_value > 1e-3


def test_nll_matches_the_mixture_density():
    x = _true(100, 6)
    sde = ss.VPSDE()  # alpha_0 = 1, sigma_0 = 0: p_0 is the clean mixture
    expected = -GMM.log_prob(x, 0.0, sde).mean()
    torch.testing.assert_close(metrics.nll(x, GMM), expected)
    # the NLL of true samples estimates the entropy; samples bunched at the modes look "better"
    bunched = GMM.means[metrics.assign(x, GMM)]
    assert float(metrics.nll(bunched, GMM)) < float(metrics.nll(x, GMM))
    assert math.isfinite(float(metrics.nll(x, GMM)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="same event size"):
        metrics.sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n_projections"):
        metrics.sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), n_projections=0)
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(n, 2\)"):
        metrics.dispersion(torch.zeros(5, 3), GMM)
    with pytest.raises(ValueError, match="gmm must be"):
        metrics.dispersion(torch.zeros(5, 2), "ring")
    with pytest.raises(ValueError, match="bandwidth"):
        metrics.mmd(torch.zeros(5, 2), torch.ones(5, 2), bandwidth=0.0)
