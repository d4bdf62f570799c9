"""Ready-made mixtures used by tests, benchmarks, the demo and the samplers' comparisons."""

from __future__ import annotations

import math

import torch

from ..errors import ArgumentError, check_int, check_interval, check_positive, check_seed
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
    n_components = check_int("n_components", n_components)
    radius, std = check_positive("radius", radius), check_positive("std", std)
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
    dim, n_components = check_int("dim", dim), check_int("n_components", n_components)
    spread = check_positive("spread", spread)
    lo, hi = check_interval("std_range", std_range)
    if lo <= 0:
        raise ArgumentError(f"std_range must be (lo, hi) with 0 < lo < hi, got {std_range!r}")
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    means = spread * torch.randn(n_components, dim, generator=gen, dtype=dtype)
    stds = lo + (hi - lo) * torch.rand(n_components, dim, generator=gen, dtype=dtype)
    # Gamma(2) draws as sums of two exponentials, so the generator alone fixes them
    weights = -torch.log(torch.rand(n_components, 2, generator=gen, dtype=dtype)).sum(1)
    return GaussianMixture(means, stds, weights, dtype=dtype)
