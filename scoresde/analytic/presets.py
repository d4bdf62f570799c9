"""Ready-made mixtures used by tests, benchmarks, the demo and the samplers' comparisons."""

from __future__ import annotations

import math

import torch

from ..errors import ArgumentError
from .gmm import GaussianMixture


def ring_mixture(
    n_components: int = 8,
    radius: float = 4.0,
    std: float = 0.3,
    weights=None,
    *,
    dtype: torch.dtype = torch.float64,
) -> GaussianMixture:
    """``n_components`` isotropic Gaussians evenly spaced on a circle in 2-D.

    The default weights are unequal, ``k + 1`` normalised (1/36 ... 8/36 for 8 modes), so a
    sampler that drops or evens out modes is caught.
    """
    if not isinstance(n_components, int) or n_components < 1:
        raise ArgumentError(f"n_components must be a positive integer, got {n_components!r}")
    angles = torch.arange(n_components, dtype=dtype) * (2 * math.pi / n_components)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    if weights is None:
        weights = torch.arange(1, n_components + 1, dtype=dtype)
    return GaussianMixture(means, std, weights, dtype=dtype)


def random_mixture(
    dim: int = 16,
    n_components: int = 8,
    *,
    spread: float = 3.0,
    std_range: tuple[float, float] = (0.3, 0.8),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> GaussianMixture:
    """A reproducible mixture in ``dim`` dimensions with diagonal, unequal components.

    Means are drawn from :math:`\\mathcal N(0, \\text{spread}^2 I)`, per-coordinate stds uniformly
    from ``std_range``, weights from a Dirichlet(2) draw: well separated for ``dim >= 4``.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ArgumentError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(n_components, int) or n_components < 1:
        raise ArgumentError(f"n_components must be a positive integer, got {n_components!r}")
    gen = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(n_components, dim, generator=gen, dtype=dtype)
    lo, hi = std_range
    stds = lo + (hi - lo) * torch.rand(n_components, dim, generator=gen, dtype=dtype)
    # Gamma(2) draws as sums of two exponentials, so the generator alone fixes them
    weights = -torch.log(torch.rand(n_components, 2, generator=gen, dtype=dtype)).sum(1)
    return GaussianMixture(means, stds, weights, dtype=dtype)
