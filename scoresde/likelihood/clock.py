r"""The variable the ODE solver steps in.

Substituting :math:`t = \tau(u)` in the PF-ODE gives :math:`dx/du = v(x, \tau(u))\,\tau'(u)`:
the same solution and the same divergence integral, only the steps an adaptive solver picks
change. Every SDE steps in :math:`t`, except a drift-free linear SDE (``sde.alpha_is_one``: VE)
integrated from data towards noise (the likelihood, ``encode``), which steps in its noise level
:math:`\sigma`. Measured with dopri5 at
rtol = atol = 1e-5 on the ring mixture's exact score (VE, sigma 0.01 to 50): encode 134
evaluations in :math:`\sigma` vs 140 in :math:`t`, but decode (the ODE sampler) 212 vs 110;
``benchmarks/likelihood.py`` found 15-20 % fewer for the VE likelihood in :math:`\sigma`, and
VP needs fewer in :math:`t`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, LinearSDEBase


class _Clock:
    r"""The variable :math:`u(t)` the solver steps in. Substituting :math:`t = \tau(u)` gives
    :math:`dx/du = v(x, \tau(u))\,\tau'(u)` with the same solution and the same divergence
    integral :math:`\int \nabla\cdot v\,dt = \int \nabla\cdot v\,\tau'(u)\,du`; only the step
    sizes the adaptive solver picks change. The default is :math:`u = t`."""

    scaled = False

    def u(self, t: float) -> float:
        return t

    def t(self, u: Tensor) -> Tensor:
        return u

    def dt_du(self, u: Tensor) -> Tensor:
        return torch.ones_like(u)


class _SigmaClock(_Clock):
    r"""Drift-free linear SDEs (VE): step in the noise level :math:`u = \sigma_t = e^{-\lambda_t}`
    (:math:`\alpha_t = 1`), so :math:`t(u)` inverts the log-SNR and
    :math:`dt/du = 2\sigma_t / (d\sigma_t^2/dt)`. For VE, :math:`\sigma_t = \sigma_{min} r^t`.

    The VE PF-ODE in :math:`\sigma` is :math:`dx/d\sigma = -\sigma\,s(x, \sigma)` (EDM's form),
    whose solutions are close to straight lines where :math:`\sigma` dominates the data's scale;
    dopri5 needs 15-20 % fewer evaluations than in :math:`t \propto \log\sigma` (benchmark).
    (For VP the opposite holds, so VP keeps :math:`t`.)"""

    scaled = True

    def __init__(self, sde: LinearSDEBase):
        self.sde = sde

    def u(self, t: float) -> float:
        return float(self.sde.marginal(torch.tensor(t, dtype=torch.float64))[1])

    def t(self, u: Tensor) -> Tensor:
        return self.sde.t_from_log_snr(-torch.log(u))

    def dt_du(self, u: Tensor) -> Tensor:
        return 2 * u / self.sde.dsigma2_dt(self.t(u).clamp(0, self.sde.T))


def clock_for(sde: SDE, towards_noise: bool = True) -> _Clock:
    r"""The integration variable for ``sde``: :math:`\sigma` for a drift-free linear SDE (VE)
    integrated towards noise (increasing ``t``), :math:`t` otherwise (see the module for the measurements)."""
    drift_free = isinstance(sde, LinearSDEBase) and sde.alpha_is_one
    return _SigmaClock(sde) if drift_free and towards_noise else _Clock()
