r"""The numeric linear SDE :math:`dx = f(t)\,x\,dt + g(t)\,dW` from any two callables.

Its marginals (see :mod:`scoresde.sde.linear_base`) are integrated once, at construction:

.. math::
    \alpha_t = \exp\!\int_0^t f(s)\,ds,\qquad
    \sigma_t^2 = \alpha_t^2\Big(\sigma_0^2 + \int_0^t \frac{g(s)^2}{\alpha_s^2}\,ds\Big),

and the integration checks itself: a coefficient that diverges inside :math:`[0, T]` or varies
too fast for the grid is refused with the time where it happens, instead of giving wrong
marginals without a word.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import (
    ArgumentError,
    check_callable,
    check_eps,
    check_float_tensor,
    check_int,
    check_nonneg,
    check_positive,
)
from ._hermite import hermite
from .linear_base import LinearSDEBase, evaluate

Coefficient = Callable[[Tensor], "Tensor | float"]

#: the largest disagreement between the grid's two estimates of the marginals (one-cell and
#: two-half-cell quadrature, and the interpolant against quadrature at each cell's midpoint)
#: that construction accepts. The built-ins' f and g stay below 6e-8 (VP cosine near T; linear
#: VP 8e-12); a cosine schedule left to diverge at T = 1 is off by 0.7, and a sigmoid truncated
#: at log-SNR -10 (beta(1) ~ 7e3, a near-pole 1.5e-4 from T) by 7e-3 at the default grid size
RESOLUTION_TOL = 1e-6


class LinearSDE(LinearSDEBase):
    r"""The linear SDE :math:`dx = f(t)\,x\,dt + g(t)\,dW` built from callables ``f`` and ``g``.

    The marginals are integrated once, at construction, on a grid of ``grid_size`` cells over
    ``[0, T]`` in float64 (8-point Gauss-Legendre per cell, with nested quadrature for
    :math:`\int f` inside :math:`\int g^2/\alpha^2`), and evaluated at any ``t`` by cubic
    Hermite interpolation with exact node derivatives: relative error below 1e-6 for smooth
    schedules (1e-9 and better for the built-ins). Evaluation is pure torch and runs on ``t``'s
    device without host synchronisation.

    Construction estimates the grid's own error in every cell -- the one-cell quadrature against
    two half cells, and the interpolant against quadrature at the cell's midpoint -- and raises
    ArgumentError where they disagree by more than ``RESOLUTION_TOL`` (relative, in
    :math:`\alpha_t` and :math:`\sigma_t^2`): a coefficient that diverges at the end of the
    interval (the cosine schedule's :math:`\beta(t) = \pi\tan(\pi t/2)` at :math:`T = 1`) or that
    varies too fast for the grid. Truncate such a schedule (the built-in
    ``VPSDE(schedule="cosine")`` does, explicitly) or raise ``grid_size``.

    Args:
        f: drift coefficient, ``f(t) -> Tensor`` (a float64 tensor of times in, same shape out).
        g: diffusion coefficient ``g(t) >= 0``, same convention.
        T: end time.
        sigma0: std of the perturbation the data are taken to carry at ``t = 0`` (VE's
            ``sigma_min`` convention); 0 for a process started exactly at the data.
        eps: smallest time used by samplers and likelihoods.
        prior_std: std of the Gaussian prior :math:`p_T`; default :math:`\sigma_T`.
        grid_size: number of grid cells.

    ``alpha_is_one`` is True when ``f`` is exactly 0 at every quadrature point.
    """

    _GL_ORDER = 8

    def __init__(
        self,
        f: Coefficient,
        g: Coefficient,
        *,
        T: float = 1.0,
        sigma0: float = 0.0,
        eps: float = 1e-5,
        prior_std: float | None = None,
        grid_size: int = 4096,
    ):
        check_callable("f", f, "f(t)")
        check_callable("g", g, "g(t)")
        grid_size = check_int("grid_size", grid_size, 16)
        self.sigma0 = check_nonneg("sigma0", sigma0)
        self.T = check_positive("T", T)
        self.eps = check_eps(eps, self.T)
        self._f_fn, self._g_fn = f, g
        self._build_grid(grid_size)
        if prior_std is None:
            prior_std = float(self._nodes_on(torch.device("cpu"))["var"][-1].sqrt())
        self.prior_std = check_positive("prior_std", prior_std)

    # ---- coefficients --------------------------------------------------------------------
    def f(self, t: Tensor | float) -> Tensor:
        r"""Drift coefficient :math:`f(t) = d\log\alpha_t/dt`."""
        return evaluate(self._f_fn, self.time(t), "f")

    def g(self, t: Tensor | float) -> Tensor:
        """Diffusion coefficient :math:`g(t)`."""
        return evaluate(self._g_fn, self.time(t), "g")

    # ---- marginals -----------------------------------------------------------------------
    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r""":math:`(\alpha_t, \sigma_t)`, each of ``t``'s shape, dtype and device."""
        t = self.time(t)
        nodes = self._nodes_on(t.device)
        log_alpha = hermite(t, nodes["t"], nodes["log_alpha"], nodes["f"])
        var = hermite(t, nodes["t"], nodes["var"], nodes["dvar"])
        return log_alpha.exp(), var.clamp_min(0).sqrt()

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""The time :math:`t` with :math:`\lambda_t` = ``lam`` (inverse of :meth:`log_snr`):
        bracket on the grid, then safeguarded Newton steps on the interpolant."""
        check_float_tensor("lam", lam)
        nodes = self._nodes_on(lam.device)
        neg_lam = nodes["neg_log_snr"]
        lam64 = lam.to(torch.float64)
        i = torch.searchsorted(neg_lam, -lam64).clamp(1, neg_lam.numel() - 1) - 1
        lo, hi = nodes["t"][i], nodes["t"][i + 1]
        t = 0.5 * (lo + hi)
        for _ in range(10):  # keep the bracket, fall back to bisection
            alpha, sigma = self.marginal(t)
            resid = alpha.log() - sigma.log() - lam64  # lambda decreases: resid > 0 => t too small
            lo = torch.where(resid > 0, t, lo)
            hi = torch.where(resid > 0, hi, t)
            slope = self.f(t) - 0.5 * self.dsigma2_dt(t) / sigma.square()
            newton = t - resid / slope
            t = torch.where(torch.isfinite(newton), newton.clamp(lo, hi), 0.5 * (lo + hi))
        return t.to(lam.dtype)

    # ---- the grid -------------------------------------------------------------------------
    def _cells(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        r"""Per interval :math:`[a, b]`: :math:`\int_a^b f` and :math:`\int_a^b g(s)^2 e^{2\int_s^b f}\,ds`
        by Gauss-Legendre, with nested quadrature for the inner integral."""
        x_gl, w_gl = self._gl
        width = b - a
        q = a[:, None] + 0.5 * width[:, None] * (1 + x_gl)[None, :]
        sub = a[:, None, None] + 0.5 * (q - a[:, None])[..., None] * (1 + x_gl)
        f_q, f_sub = evaluate(self._f_fn, q, "f"), evaluate(self._f_fn, sub, "f")
        g_q = evaluate(self._g_fn, q, "g")
        for name, values in (("f", f_q), ("f", f_sub), ("g", g_q)):
            if not bool(torch.isfinite(values).all()):
                raise ArgumentError(f"f and g must be finite on [0, T]; {name}(t) is not")
        if bool((g_q < 0).any()):
            raise ArgumentError("g must be non-negative on [0, T]")
        self._drift_free &= bool((f_q == 0).all()) and bool((f_sub == 0).all())
        dF = 0.5 * width * (f_q * w_gl).sum(1)
        F_to_q = 0.5 * (q - a[:, None]) * (f_sub * w_gl).sum(-1)
        # without overflow: the noise added over the cell, grown by e^{2 (F_b - F_s)}
        noise = 0.5 * width * (g_q.square() * torch.exp(2 * (dF[:, None] - F_to_q)) * w_gl).sum(1)
        return dF, noise

    def _build_grid(self, n: int) -> None:
        T = self.T
        self._gl = tuple(torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(self._GL_ORDER))
        self._drift_free = True
        # Uniform cells of width h = T/n, refined below 32 h into cells of width t/32 (down to
        # 1e-9 T) so that sigma_t^2, which may vanish like t or t^2 at 0, keeps its relative
        # accuracy (the Hermite error ~ h^4 against sigma_t^2 ~ t^2).
        start, ratio = 32 * T / n, 1 + 1 / 32
        n_geo = math.ceil(math.log(start / (1e-9 * T)) / math.log(ratio))
        geometric = start * ratio ** -torch.arange(n_geo, 0, -1, dtype=torch.float64)
        uniform = torch.linspace(start, T, n - 31, dtype=torch.float64)
        t_nodes = torch.cat([torch.zeros(1, dtype=torch.float64), geometric, uniform])
        f_nodes, g_nodes = evaluate(self._f_fn, t_nodes, "f"), evaluate(self._g_fn, t_nodes, "g")
        for name, values in (("f", f_nodes), ("g", g_nodes)):
            if not bool(torch.isfinite(values).all()):
                raise ArgumentError(f"f and g must be finite on [0, T]; {name}(t) is not")
        if bool((g_nodes < 0).any()):
            raise ArgumentError("g must be non-negative on [0, T]")
        left, right = t_nodes[:-1], t_nodes[1:]
        cell_F, cell_noise = self._cells(left, right)
        # sigma^2 recursion: var_{c+1} = var_c e^{2 dF} + noise_c
        decay_np, noise_np = torch.exp(2 * cell_F).numpy(), cell_noise.numpy()
        var = np.empty(len(t_nodes))
        var[0] = self.sigma0**2
        for c in range(len(t_nodes) - 1):
            var[c + 1] = var[c] * decay_np[c] + noise_np[c]
        var_nodes = torch.from_numpy(var)
        log_alpha = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cell_F, 0)])
        self._n = n
        self._node_cache = {
            torch.device("cpu"): {
                "t": t_nodes,
                "log_alpha": log_alpha,
                "f": f_nodes,
                "var": var_nodes,
                "dvar": 2 * f_nodes * var_nodes + g_nodes.square(),
                "neg_log_snr": 0.5 * torch.log(var_nodes) - log_alpha,  # -inf at t = 0 when sigma0 = 0
            }
        }
        self._check_resolution(left, right)
        self.alpha_is_one = self._drift_free

    def _check_resolution(self, left: Tensor, right: Tensor) -> None:
        """Refuse a grid whose two error estimates per cell exceed ``RESOLUTION_TOL`` (see the class)."""
        nodes = self._node_cache[torch.device("cpu")]
        mid = 0.5 * (left + right)
        dF1, noise1 = self._cells(left, mid)
        dF2, noise2 = self._cells(mid, right)
        var_mid = nodes["var"][:-1] * torch.exp(2 * dF1) + noise1
        var_right = var_mid * torch.exp(2 * dF2) + noise2
        la_mid = nodes["log_alpha"][:-1] + dF1
        interp_la = hermite(mid, nodes["t"], nodes["log_alpha"], nodes["f"])
        interp_var = hermite(mid, nodes["t"], nodes["var"], nodes["dvar"])
        candidates = {
            "the quadrature (one cell against two halves)": (
                (nodes["log_alpha"][1:] - (la_mid + dF2)).abs(), _relative(nodes["var"][1:], var_right), right),
            "the interpolation (against quadrature at the cell midpoints)": (
                (interp_la - la_mid).abs(), _relative(interp_var, var_mid), mid),
        }
        for what, (err_alpha, err_var, where) in candidates.items():
            err = torch.maximum(err_alpha, err_var)
            err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
            worst = int(err.argmax())
            if float(err[worst]) > RESOLUTION_TOL:
                raise ArgumentError(
                    f"LinearSDE cannot integrate the marginals accurately near t = {float(where[worst]):.6g}: "
                    f"{what} is off by {float(err[worst]):.2g} (relative, in alpha_t or sigma_t^2; tolerance "
                    f"{RESOLUTION_TOL:g}). f or g diverges there or varies too fast for the grid: truncate a "
                    f"schedule whose beta(t) diverges at T (e.g. the cosine schedule at T = 1; "
                    f"VPSDE(schedule='cosine') truncates it explicitly), or raise grid_size={self._n}"
                )

    def _nodes_on(self, device: torch.device) -> dict[str, Tensor]:
        cache = self._node_cache.get(device)
        if cache is None:
            cpu = self._node_cache[torch.device("cpu")]
            cache = self._node_cache[device] = {k: v.to(device) for k, v in cpu.items()}
        return cache

    def __repr__(self) -> str:
        return f"LinearSDE(T={self.T:g}, sigma0={self.sigma0:g}, grid_size={self._n})"


def _relative(approx: Tensor, exact: Tensor) -> Tensor:
    """|approx - exact| / |exact|, 0 where both vanish (sigma_0 = 0 at t = 0)."""
    diff = (approx - exact).abs()
    return torch.where(diff == 0, torch.zeros_like(diff), diff / exact.abs())
