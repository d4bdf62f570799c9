r"""Piecewise cubic Hermite interpolation on a table of nodes (float64), and monotone slopes.

On the cell :math:`[t_i, t_{i+1}]` of width :math:`h`, with :math:`s = (t - t_i)/h`,

.. math:: y(t) = h_{00}(s)\,y_i + h_{10}(s)\,h\,y'_i + h_{01}(s)\,y_{i+1} + h_{11}(s)\,h\,y'_{i+1},

exact at the nodes, continuous with a continuous first derivative. :func:`pchip_slopes` gives
the Fritsch-Carlson slopes (SciPy's ``PchipInterpolator``) that keep a monotone table monotone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cell_of(grid: Tensor, t64: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Index ``i`` of the cell holding each time (end cells extended), its width and ``s``."""
    i = (torch.searchsorted(grid, t64, right=True) - 1).clamp(0, grid.numel() - 2)
    h = grid[i + 1] - grid[i]
    return i, h, (t64 - grid[i]) / h


def hermite(t: Tensor, grid: Tensor, y: Tensor, dy: Tensor) -> Tensor:
    """The interpolant at ``t``, computed in float64 and returned in ``t``'s dtype."""
    t64 = t.to(torch.float64).contiguous()  # searchsorted copies (and warns) otherwise
    i, h, s = cell_of(grid, t64)
    h00 = (1 + 2 * s) * (1 - s) ** 2
    h10 = s * (1 - s) ** 2
    h01 = s**2 * (3 - 2 * s)
    h11 = s**2 * (s - 1)
    out = h00 * y[i] + h10 * h * dy[i] + h01 * y[i + 1] + h11 * h * dy[i + 1]
    return out.to(t.dtype)


def hermite_derivative(t: Tensor, grid: Tensor, y: Tensor, dy: Tensor) -> Tensor:
    """The interpolant's derivative :math:`dy/dt` at ``t`` (continuous across the nodes)."""
    t64 = t.to(torch.float64).contiguous()
    i, h, s = cell_of(grid, t64)
    d00 = 6 * s * (s - 1)
    d10 = (1 - s) * (1 - 3 * s)
    d11 = s * (3 * s - 2)
    out = (d00 * (y[i] - y[i + 1])) / h + d10 * dy[i] + d11 * dy[i + 1]
    return out.to(t.dtype)


def pchip_slopes(grid: Tensor, y: Tensor) -> Tensor:
    r"""Fritsch-Carlson node slopes: a weighted harmonic mean of the neighbouring secants where
    they have the same sign (0 where they differ), SciPy's three-point rule at the ends. The
    interpolant is then monotone wherever the table is."""
    h = grid[1:] - grid[:-1]
    delta = (y[1:] - y[:-1]) / h
    d = torch.zeros_like(y)
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same = (delta[:-1] * delta[1:]) > 0
    harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = torch.where(same, harmonic, torch.zeros_like(harmonic))
    d[0] = _edge(h[0], h[1], delta[0], delta[1])
    d[-1] = _edge(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _edge(h0: Tensor, h1: Tensor, m0: Tensor, m1: Tensor) -> Tensor:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if torch.sign(d) != torch.sign(m0):
        return torch.zeros_like(d)
    if torch.sign(m0) != torch.sign(m1) and d.abs() > 3 * m0.abs():
        return 3 * m0
    return d
