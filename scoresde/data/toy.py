r"""Toy 2-D data sets for score models, drawn with a seeded generator.

``swiss_roll``, ``moons`` (two moons), ``8gaussians``, ``checkerboard``, ``pinwheel`` and
``rings`` (concentric circles), each scaled to a standard deviation of roughly 1-2 per
coordinate. :func:`toy_sample` draws ``n`` points; :class:`ToyDataset` holds a fixed draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import check_choice, check_dtype, check_int, check_nonneg, check_seed
from .images import TensorData

TOY_NAMES = ("swiss_roll", "moons", "8gaussians", "checkerboard", "pinwheel", "rings")


def _rand(n, g, dtype):
    return torch.rand(n, generator=g, dtype=dtype)


def _randn(*shape, g, dtype):
    return torch.randn(*shape, generator=g, dtype=dtype)


def toy_sample(name: str, n: int, *, generator: torch.Generator | None = None, seed: int | None = None,
               noise: float | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw ``n`` points of the toy set ``name``, shape ``(n, 2)``.

    Args:
        name: one of :data:`TOY_NAMES`.
        n: number of points.
        generator, seed: the randomness (a seed builds a fresh generator).
        noise: std of the Gaussian jitter (each set has its own default).
    """
    check_choice("name", name, TOY_NAMES)
    n = check_int("n", n)
    check_dtype("dtype", dtype)
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else check_seed("seed", seed))
    g = generator
    if name == "swiss_roll":
        s = 1.5 * math.pi * (1 + 2 * _rand(n, g, dtype))
        x = torch.stack([s * s.cos(), s * s.sin()], 1) / 5.0
        default = 0.1
    elif name == "moons":
        half = n // 2
        a = math.pi * _rand(n, g, dtype)
        upper = torch.stack([a.cos(), a.sin()], 1)
        lower = torch.stack([1 - a.cos(), 0.5 - a.sin()], 1)
        x = torch.cat([upper[:half], lower[half:]]) * 1.5 - torch.tensor([0.75, 0.4], dtype=dtype)
        default = 0.1
    elif name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=g)
        ang = k.to(dtype) * (math.pi / 4)
        x = 2.0 * torch.stack([ang.cos(), ang.sin()], 1)
        default = 0.2
    elif name == "checkerboard":
        x1 = 4 * _rand(n, g, dtype) - 2
        col = torch.randint(0, 2, (n,), generator=g).to(dtype)
        x2 = _rand(n, g, dtype) - 2 * col + torch.floor(x1) % 2
        x = torch.stack([x1, x2], 1)
        default = 0.0
    elif name == "pinwheel":
        arms, radial, tangential, rate = 5, 0.3, 0.1, 0.25
        k = torch.randint(0, arms, (n,), generator=g)
        feats = _randn(n, 2, g=g, dtype=dtype) * torch.tensor([radial, tangential], dtype=dtype)
        feats[:, 0] += 1.0
        ang = k.to(dtype) * (2 * math.pi / arms) + rate * torch.exp(feats[:, 0])
        c, s = ang.cos(), ang.sin()
        x = 2.0 * torch.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], 1)
        default = 0.0
    else:  # rings
        k = torch.randint(1, 4, (n,), generator=g).to(dtype)
        ang = 2 * math.pi * _rand(n, g, dtype)
        x = 0.8 * k[:, None] * torch.stack([ang.cos(), ang.sin()], 1)
        default = 0.08
    noise = default if noise is None else check_nonneg("noise", noise)
    if noise > 0:
        x = x + noise * _randn(n, 2, g=g, dtype=dtype)
    return x


class ToyDataset(TensorData):
    """A fixed draw of ``n`` points of a toy 2-D set (see :func:`toy_sample`)."""

    def __init__(self, name: str, n: int = 10_000, *, seed: int = 0, noise: float | None = None,
                 dtype: torch.dtype = torch.float32):
        self.name = name
        super().__init__(toy_sample(name, n, seed=seed, noise=noise, dtype=dtype))
