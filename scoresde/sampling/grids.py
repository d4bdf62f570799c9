r"""Decreasing time grids :math:`t_0 = t_{start} > t_1 > \dots > t_N = \varepsilon`.

* ``"uniform"``: equal steps in :math:`t` (Song et al. 2021).
* ``"log_snr"``: equal steps in :math:`\lambda_t = \log(\alpha_t/\sigma_t)` (DPM-Solver); linear SDEs.
* ``"edm"``: the EDM schedule (Karras et al. 2022, eq. 5) on the noise level
  :math:`\tilde\sigma = \sigma_t/\alpha_t = e^{-\lambda_t}`:
  :math:`\tilde\sigma_i = (\tilde\sigma_{max}^{1/\rho} + \tfrac iN(\tilde\sigma_{min}^{1/\rho}
  - \tilde\sigma_{max}^{1/\rho}))^\rho`, dense at low noise for large :math:`\rho`; linear SDEs.
* a tensor or sequence of times given by the caller (strictly decreasing, inside ``[0, T]``).

Grids are built in float64 on the CPU once, before sampling, then moved to the samples'
dtype and device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice, check_int, check_positive, check_range
from ..sde import SDE, LinearSDEBase

GRIDS = ("uniform", "log_snr", "edm")


def time_grid(
    sde: SDE,
    steps: int,
    t_start: float,
    t_end: float,
    kind: str | Sequence[float] | Tensor = "uniform",
    *,
    rho: float = 7.0,
) -> Tensor:
    """The grid of ``steps + 1`` decreasing float64 times from ``t_start`` to ``t_end``.

    ``kind`` names a grid (``t_end`` in (0, T), ``t_start`` in (t_end, T], ``rho`` > 0 for
    ``"edm"``) or gives the times themselves (then ``steps``, ``t_start`` and ``t_end`` are not used).
    """
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not isinstance(kind, str):
        return check_user_grid(sde, kind)
    check_choice("grid", kind, GRIDS)
    steps = check_int("steps", steps)
    t_end = check_range("t_end", t_end, 0.0, sde.T)
    t_start = check_range("t_start", t_start, t_end, sde.T, high_closed=True)
    rho = check_positive("rho", rho)
    if kind == "uniform":
        return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    if not isinstance(sde, LinearSDEBase):
        raise ArgumentError(
            f"grid={kind!r} needs a LinearSDE (it is defined through log_snr), got {type(sde).__name__}; "
            "use grid='uniform' or pass the times"
        )
    ends = torch.tensor([t_start, t_end], dtype=torch.float64)
    lam = sde.log_snr(ends)
    if kind == "log_snr":
        lams = torch.linspace(float(lam[0]), float(lam[1]), steps + 1, dtype=torch.float64)
    else:
        s_max, s_min = (-lam).exp()
        ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        sig = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        lams = -sig.log()
    t = sde.t_from_log_snr(lams).clamp(t_end, t_start)
    t[0], t[-1] = t_start, t_end  # exact end points despite round-off in the inverse
    return t


def check_user_grid(sde: SDE, times) -> Tensor:
    """Validate a caller's grid: 1-D, at least 2 finite times, strictly decreasing, inside ``(0, T]``."""
    if isinstance(times, (bytes, bool)) or (isinstance(times, Tensor) and not times.is_floating_point()):
        raise ArgumentError(f"grid must be 'uniform', 'log_snr', 'edm' or a sequence of times, got {times!r}")
    try:
        t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"grid must be 'uniform', 'log_snr', 'edm' or a sequence of times, got {times!r}") from None
    if t.dim() != 1 or t.numel() < 2:
        raise ArgumentError(f"grid must be a 1-D sequence of at least 2 times, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] < t[:-1]).all()):
        raise ArgumentError(f"grid must be strictly decreasing (from t_start down to eps), got {t.tolist()}")
    if float(t[0]) > sde.T or float(t[-1]) <= 0:
        raise ArgumentError(f"grid must lie in (0, T] = (0, {sde.T:g}], got [{float(t[-1]):g}, {float(t[0]):g}]")
    return t
