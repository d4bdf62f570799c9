r"""Two-sample distances between sets of samples: sliced Wasserstein, MMD, energy distance.

All take ``x`` of shape ``(n, *event)`` and ``y`` of shape ``(m, *event)`` (flattened to vectors)
and return a 0-d tensor. Random projections take a ``seed`` so a distance is reproducible, and
the same seed gives the same projections for every pair compared.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice, check_int, check_positive, check_seed


def check_finite_samples(name: str, x: Tensor) -> Tensor:
    """Refuse samples with NaN or inf: a distance or a mode count of them would be meaningless."""
    finite = torch.isfinite(x)
    bad = ~finite.flatten(1).all(1) if x.dim() > 1 else ~finite
    if bool(bad.any()):
        raise ArgumentError(f"{name} must be finite: {int(bad.sum())} of its {x.shape[0]} samples hold NaN or inf")
    return x


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, Tensor) or not v.is_floating_point() or v.dim() < 1 or v.shape[0] < 2:
            got = f"shape {tuple(v.shape)}, dtype {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
            raise ArgumentError(f"{name} must be a floating-point tensor with at least 2 samples, got {got}")
        check_finite_samples(name, v)
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ArgumentError(f"x and y must have the same event size, got {x.shape[1]} and {y.shape[1]}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(device=x.device, dtype=dtype)


def sliced_wasserstein(x: Tensor, y: Tensor, *, n_projections: int = 256, p: int = 2, seed: int = 0) -> Tensor:
    r"""Sliced :math:`p`-Wasserstein distance :math:`\big(\mathbb E_\theta W_p^p(\theta^\top x, \theta^\top y)\big)^{1/p}`.

    Directions :math:`\theta` are uniform on the sphere (``n_projections`` of them, from ``seed``);
    each 1-D :math:`W_p` compares sorted projections (quantiles at common levels when ``n != m``).
    """
    x, y = _pair(x, y)
    n_projections = check_int("n_projections", n_projections)
    check_choice("p", p, (1, 2))
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    theta = torch.randn(x.shape[1], n_projections, generator=gen, dtype=x.dtype).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = (x @ theta).sort(0)
    py, _ = (y @ theta).sort(0)
    if px.shape[0] != py.shape[0]:
        levels = (torch.arange(max(len(px), len(py)), dtype=x.dtype, device=x.device) + 0.5) / max(len(px), len(py))
        px = torch.quantile(px, levels, dim=0)
        py = torch.quantile(py, levels, dim=0)
    return (px - py).abs().pow(p).mean().pow(1 / p)


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a, b).square()


def mmd(x: Tensor, y: Tensor, *, bandwidth: float | None = None) -> Tensor:
    r"""Unbiased squared maximum mean discrepancy with a Gaussian kernel :math:`k = e^{-\lVert a-b\rVert^2/2h^2}`.

    ``bandwidth`` :math:`h` defaults to the median pairwise distance of the pooled samples. Can
    be slightly negative (unbiased estimate of 0 for equal distributions).
    """
    x, y = _pair(x, y)
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidth is None:
        h2 = torch.cat([dxx.flatten(), dyy.flatten(), dxy.flatten()]).median().clamp_min(1e-12)
    else:
        bandwidth = check_positive("bandwidth", bandwidth)
        h2 = torch.as_tensor(bandwidth**2, dtype=x.dtype)
    n, m = len(x), len(y)
    kxx = torch.exp(-dxx / (2 * h2))
    kyy = torch.exp(-dyy / (2 * h2))
    kxy = torch.exp(-dxy / (2 * h2))
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean())


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Energy distance :math:`2\,\mathbb E\lVert X-Y\rVert - \mathbb E\lVert X-X'\rVert - \mathbb E\lVert Y-Y'\rVert`
    (unbiased within-set means)."""
    x, y = _pair(x, y)
    n, m = len(x), len(y)
    exy = torch.cdist(x, y).mean()
    exx = torch.cdist(x, x).sum() / (n * (n - 1))
    eyy = torch.cdist(y, y).sum() / (m * (m - 1))
    return 2 * exy - exx - eyy
