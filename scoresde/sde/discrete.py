r"""A discrete DDPM schedule as an exact view of the continuous VP SDE.

DDPM (Ho et al. 2020) fixes :math:`N` noise levels :math:`\bar\alpha_0 > \dots > \bar\alpha_{N-1}`
(``alphas_cumprod``, :math:`\bar\alpha_k = \prod_{j \le k}(1 - \beta_j)`, the signal level after
:math:`k + 1` steps). :class:`DiscreteVPSDE` is the VP SDE
:math:`dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW` on :math:`[0, 1]` whose marginals
match them exactly on the grid :math:`t_k = (k + 1)/N` (diffusers' convention: timestep
:math:`k` is :math:`k + 1` steps away from the clean data at :math:`t = 0`):

.. math:: \alpha_{t_k}^2 = e^{-B(t_k)} = \bar\alpha_k,\qquad B(t) = \int_0^t \beta(s)\,ds.

Between the nodes :math:`B` is the monotone cubic (PCHIP, Fritsch & Carlson 1980) through
:math:`(0, 0)` and :math:`(t_k, -\log\bar\alpha_k)`. Why this interpolation: it is exact at the
nodes, :math:`B(0) = 0` (t = 0 is the data), and monotone, so :math:`\beta(t) = B'(t) \ge 0`
is a valid SDE; and :math:`B` is :math:`C^1`, so :math:`\beta` is continuous. A
piecewise-linear :math:`B` would also be exact but makes :math:`\beta` jump at each of the
:math:`N` nodes, which adaptive ODE solvers (the likelihood, the ``ode`` sampler) pay for with
small steps at every node; a natural cubic spline may overshoot and give :math:`\beta < 0`.

Since a VP SDE's transition from :math:`s` to :math:`t` is
:math:`x_t = \frac{\alpha_t}{\alpha_s}x_s + \sqrt{1 - \alpha_t^2/\alpha_s^2}\,z` for any
:math:`\beta`, the step between two nodes is DDPM's
:math:`x_k = \sqrt{\bar\alpha_k/\bar\alpha_{k-1}}\,x_{k-1} + \sqrt{1 - \bar\alpha_k/\bar\alpha_{k-1}}\,z`:
on the grid ``sde.t_from_timestep(torch.arange(N - 1, -1, -1))`` the ``reverse_diffusion`` and
``ancestral`` samplers are DDPM's sampler, and ``dpm_solver`` of order 1 is DDIM.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from ..errors import ArgumentError, values_readable
from ._hermite import hermite, hermite_derivative, pchip_slopes
from .schedules import VPSchedule
from .vp import VPFamily


def _as_float64(name: str, value) -> Tensor:
    if isinstance(value, (str, bytes)):
        raise ArgumentError(f"{name} must be a 1-D sequence of numbers, got {value!r}")
    try:
        if isinstance(value, Tensor):
            t = value.detach().to(device="cpu", dtype=torch.float64)
        else:
            t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"{name} must be a 1-D sequence of numbers, got {value!r:.80}") from None
    if t.dim() != 1 or t.numel() < 2:
        raise ArgumentError(f"{name} must be a 1-D sequence of at least 2 numbers, got shape {tuple(t.shape)}")
    return t.clone()


def _first_bad(name: str, values: Tensor, ok: Tensor, rule: str) -> None:
    if not bool(ok.all()):
        k = int((~ok).nonzero()[0])
        raise ArgumentError(f"{name} must {rule}, got {name}[{k}] = {float(values[k])!r}")


class _PchipSchedule(VPSchedule):
    """:math:`B(t)` as the monotone cubic through :math:`(j/N, B_j)`, :math:`B_0 = 0` (see the module)."""

    name = "discrete"

    def __init__(self, alphas_cumprod: Tensor):
        n = alphas_cumprod.numel()
        self.grid = torch.arange(n + 1, dtype=torch.float64) / n
        self.B = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.log(alphas_cumprod)])
        self.dB = pchip_slopes(self.grid, self.B)
        self._cache: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if device not in self._cache:
            self._cache[device] = (self.grid.to(device), self.B.to(device), self.dB.to(device))
        return self._cache[device]

    def integrated_beta(self, t: Tensor) -> Tensor:
        return hermite(t, *self._on(t.device))

    def beta(self, t: Tensor) -> Tensor:
        return hermite_derivative(t, *self._on(t.device))

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        B = hermite(t.to(torch.float64), *self._on(t.device))  # in float64, then t's dtype
        return torch.exp(-0.5 * B).to(t.dtype), torch.sqrt(-torch.expm1(-B)).to(t.dtype)

    def log_snr(self, t: Tensor) -> Tensor:
        B = hermite(t.to(torch.float64), *self._on(t.device))
        return (-0.5 * B - 0.5 * torch.log(-torch.expm1(-B))).to(t.dtype)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # B(t) = log(1 + e^{-2 lam}); the cell from the node table, then safeguarded Newton on the cubic
        grid, B_nodes, dB_nodes = self._on(lam.device)
        target = torch.nn.functional.softplus(-2 * lam.to(torch.float64))
        i = (torch.searchsorted(B_nodes, target.contiguous(), right=True) - 1).clamp(0, grid.numel() - 2)
        lo, hi = grid[i], grid[i + 1]
        t = 0.5 * (lo + hi)
        for _ in range(20):
            resid = hermite(t, grid, B_nodes, dB_nodes) - target  # B increases: resid > 0 => t too large
            lo = torch.where(resid > 0, lo, t)
            hi = torch.where(resid > 0, t, hi)
            newton = t - resid / hermite_derivative(t, grid, B_nodes, dB_nodes)
            t = torch.where(torch.isfinite(newton), newton.clamp(lo, hi), 0.5 * (lo + hi))
        return t.to(lam.dtype)

    def spec(self) -> None:
        return None  # DiscreteVPSDE.spec records alphas_cumprod itself

    def __repr__(self) -> str:
        return f"num_timesteps={self.B.numel() - 1}"


class DiscreteVPSDE(VPFamily):
    r"""The VP SDE whose marginals are a discrete DDPM schedule at the grid times (see the module).

    Args:
        betas: the per-step :math:`\beta_k \in (0, 1)`, length N; or
        alphas_cumprod: :math:`\bar\alpha_k = \prod_{j\le k}(1-\beta_j)`, length N, strictly
            decreasing in (0, 1). Give exactly one (tensors, arrays or sequences; read in float64).
        eps: smallest time of samplers and likelihoods; default :math:`t_0 = 1/N`, the first
            noise level (timestep 0).

    ``T = 1``; timestep k (``0..N-1``) is at :math:`t_k = (k+1)/N`. Prior :math:`\mathcal N(0, I)`.
    :meth:`from_diffusers` builds it from a diffusers scheduler.
    """

    def __init__(self, betas=None, alphas_cumprod=None, *, eps: float | None = None):
        if (betas is None) == (alphas_cumprod is None):
            raise ArgumentError("give exactly one of betas and alphas_cumprod")
        if betas is not None:
            b = _as_float64("betas", betas)
            _first_bad("betas", b, torch.isfinite(b) & (b > 0) & (b < 1), "lie in (0, 1)")
            abar = torch.cumprod(1 - b, 0)
        else:
            abar = _as_float64("alphas_cumprod", alphas_cumprod)
            _first_bad("alphas_cumprod", abar, torch.isfinite(abar) & (abar > 0) & (abar < 1), "lie in (0, 1)")
            dec = torch.cat([torch.ones(1, dtype=torch.bool), abar[1:] < abar[:-1]])
            _first_bad("alphas_cumprod", abar, dec, "be strictly decreasing (each step adds noise)")
        self.num_timesteps = abar.numel()
        self.alphas_cumprod = abar
        self.schedule = "discrete"
        self._init_vp(_PchipSchedule(abar), 1.0 / self.num_timesteps if eps is None else eps)

    @classmethod
    def from_diffusers(cls, scheduler: Any, *, eps: float | None = None) -> DiscreteVPSDE:
        """The SDE of a diffusers scheduler (``DDPMScheduler``, ``DDIMScheduler``, ...): reads its
        ``alphas_cumprod`` and ``config.num_train_timesteps`` (duck-typed; diffusers is not imported)."""
        abar = getattr(scheduler, "alphas_cumprod", None)
        config = getattr(scheduler, "config", None)
        n = getattr(config, "num_train_timesteps", None)
        if abar is None or n is None:
            raise ArgumentError(
                f"scheduler must be a diffusers noise scheduler with alphas_cumprod and config.num_train_timesteps "
                f"(e.g. diffusers.DDPMScheduler), got {type(scheduler).__name__}"
            )
        sde = cls(alphas_cumprod=abar, eps=eps)
        if sde.num_timesteps != n:
            raise ArgumentError(
                f"scheduler.alphas_cumprod has {sde.num_timesteps} entries but config.num_train_timesteps = {n}"
            )
        return sde

    @property
    def betas(self) -> Tensor:
        r""":math:`\beta_k = 1 - \bar\alpha_k/\bar\alpha_{k-1}` (float64, length N)."""
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        return 1 - self.alphas_cumprod / prev

    def t_from_timestep(self, k: Tensor | float) -> Tensor:
        r"""The time :math:`t = (k + 1)/N` of timestep ``k`` (int, float or tensor; non-integer k
        allowed, k in [-1, N-1]). Floating tensors keep their dtype, anything else gives float64."""
        n = self.num_timesteps
        if isinstance(k, Tensor) and not (k.dtype == torch.bool or k.is_complex()):
            k = k if k.is_floating_point() else k.to(torch.float64)
        elif isinstance(k, numbers.Real) and not isinstance(k, bool):
            k = torch.tensor(float(k), dtype=torch.float64)
        else:
            raise ArgumentError(f"k must be a timestep (a number or a real tensor), got {k!r}")
        if values_readable(k) and k.numel() and not bool(((k >= -1) & (k <= n - 1)).all()):
            bad = k[~((k >= -1) & (k <= n - 1))].flatten()[0].item()
            raise ArgumentError(f"k must lie in [-1, N - 1] = [-1, {n - 1}], got {bad!r}")
        return (k + 1) / n

    def timestep_from_t(self, t: Tensor | float) -> Tensor:
        r"""The (fractional) timestep :math:`k = tN - 1` of time ``t``."""
        t = self.time(t)
        return t * self.num_timesteps - 1

    def spec(self) -> dict:
        """The constructor's arguments as JSON values: ``DiscreteVPSDE(**sde.spec())`` is the same SDE."""
        return {"alphas_cumprod": self.alphas_cumprod.tolist(), "eps": self.eps}

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(num_timesteps={self.num_timesteps}, eps={self.eps:g})"

