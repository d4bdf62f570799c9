"""The Fréchet distance against its closed forms, and from samples."""

import pytest
import torch

import scoresde as ss
from scoresde.metrics import frechet_distance, gaussian_frechet_distance

F64 = torch.float64


def test_closed_forms():
    mu1, mu2 = torch.tensor([1.0, -2.0, 0.5], dtype=F64), torch.tensor([0.0, 1.0, 0.5], dtype=F64)
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=F64), torch.tensor([2.0, 1.0, 0.25], dtype=F64)
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt a - sqrt b)^2
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    torch.testing.assert_close(gaussian_frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)), expected)
    torch.testing.assert_close(gaussian_frechet_distance(mu1, torch.diag(a), mu1, torch.diag(a)),
                               torch.zeros((), dtype=F64), atol=1e-12, rtol=0)


def test_non_commuting_covariances_match_scipys_matrix_square_root():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(4, 4, generator=g, dtype=F64), torch.randn(4, 4, generator=g, dtype=F64)
    c1, c2 = m1 @ m1.T + 0.1 * torch.eye(4, dtype=F64), m2 @ m2.T + 0.1 * torch.eye(4, dtype=F64)
    mu1, mu2 = torch.randn(4, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    cross = torch.from_numpy(sqrtm((c1 @ c2).numpy()).real)
    expected = (mu1 - mu2).square().sum() + c1.trace() + c2.trace() - 2 * cross.trace()
    torch.testing.assert_close(gaussian_frechet_distance(mu1, c1, mu2, c2), expected, rtol=1e-9, atol=1e-9)
    # symmetric
    torch.testing.assert_close(gaussian_frechet_distance(mu2, c2, mu1, c1), expected, rtol=1e-9, atol=1e-9)


def test_from_samples_it_converges_to_the_gaussians_distance():
    g = torch.Generator().manual_seed(1)
    L = torch.tensor([[1.0, 0.0], [0.8, 0.6]], dtype=F64)
    x = torch.randn(40_000, 2, generator=g, dtype=F64) @ L.T
    y = 1.5 * torch.randn(40_000, 2, generator=g, dtype=F64) + torch.tensor([1.0, 0.0], dtype=F64)
    exact = gaussian_frechet_distance(torch.zeros(2, dtype=F64), L @ L.T, torch.tensor([1.0, 0.0], dtype=F64),
                                      2.25 * torch.eye(2, dtype=F64))
    assert abs(float(frechet_distance(x, y) - exact)) < 0.03  # sampling error of the moments, ~0.01 here
    assert abs(float(frechet_distance(x[:20_000], x[20_000:]))) < 0.01


def test_bad_inputs_are_named():
    with pytest.raises(ss.ArgumentError, match=r"x must be a floating-point tensor of features \(n, d\)"):
        frechet_distance(torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 2))
    with pytest.raises(ss.ArgumentError, match="x and y must have the same feature size, got 2 and 3"):
        frechet_distance(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ss.ArgumentError, match="y must be finite"):
        frechet_distance(torch.randn(5, 2), torch.full((5, 2), float("nan")))
    with pytest.raises(ss.ArgumentError, match=r"mu2 must have shape \(d,\) and cov2 shape \(d, d\)"):
        gaussian_frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))
