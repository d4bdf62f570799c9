r"""The Fréchet distance between two sets of feature vectors, each summarised by a Gaussian.

For Gaussians :math:`\mathcal N(\mu_1, C_1)` and :math:`\mathcal N(\mu_2, C_2)` the squared
2-Wasserstein (Fréchet) distance is (Dowson & Landau 1982)

.. math::
    d^2 = \lVert\mu_1 - \mu_2\rVert^2 + \operatorname{tr} C_1 + \operatorname{tr} C_2
          - 2\operatorname{tr}\big(C_1^{1/2} C_2 C_1^{1/2}\big)^{1/2} .

:func:`frechet_distance` fits the mean and covariance of each set of features and returns
:math:`d^2` -- the statistic of FID (Heusel et al. 2017) when the features are Inception-v3's;
here they are whatever the caller passes (e.g. :func:`~scoresde.metrics.digits_features`). The
matrix square roots come from symmetric eigendecompositions in float64. The estimate is biased
upwards by the sampling noise of the fitted moments (roughly :math:`\operatorname{tr} C\,(1/n + 1/m)`),
so compare distances computed with the same numbers of samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentError
from .distances import check_finite_samples


def _sqrt_psd(c: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """:math:`d^2` between :math:`\\mathcal N(\\mu_1, C_1)` and :math:`\\mathcal N(\\mu_2, C_2)` (float64, 0-d)."""
    mu1, cov1, mu2, cov2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, cov1, mu2, cov2))
    d = mu1.shape[-1] if mu1.dim() == 1 else -1
    for name, m, c in (("1", mu1, cov1), ("2", mu2, cov2)):
        if m.shape != (d,) or c.shape != (d, d):
            raise ArgumentError(f"mu{name} must have shape (d,) and cov{name} shape (d, d) with d = {d}, "
                                f"got {tuple(m.shape)} and {tuple(c.shape)}")
    r1 = _sqrt_psd(0.5 * (cov1 + cov1.T))
    middle = r1 @ (0.5 * (cov2 + cov2.T)) @ r1
    cross = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross


def frechet_distance(x: Tensor, y: Tensor) -> Tensor:
    """:math:`d^2` between Gaussians fitted to features ``x`` ``(n, d)`` and ``y`` ``(m, d)``, n, m >= 2."""
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, Tensor) or not v.is_floating_point() or v.dim() != 2 or v.shape[0] < 2:
            got = f"shape {tuple(v.shape)}, dtype {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
            raise ArgumentError(f"{name} must be a floating-point tensor of features (n, d) with n >= 2, got {got}")
        check_finite_samples(name, v)
    if x.shape[1] != y.shape[1]:
        raise ArgumentError(f"x and y must have the same feature size, got {x.shape[1]} and {y.shape[1]}")
    x, y = x.double(), y.to(device=x.device, dtype=torch.float64)
    return gaussian_frechet_distance(x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1),
                                     y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1))
