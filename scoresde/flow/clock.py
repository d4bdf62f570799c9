r"""The variable the ODE solver steps in (the engine's *clock*).

Substituting :math:`t = \tau(u)` in the PF-ODE :math:`dx/dt = v(x, t)` gives
:math:`dx/du = v(x, \tau(u))\,\tau'(u)`: the same solution and the same divergence integral
:math:`\int\nabla\!\cdot v\,dt = \int\nabla\!\cdot v\,\tau'(u)\,du`; what changes is where a
solver places its steps and how large its local error is. Two clocks:

* :class:`Clock`: :math:`u = t`.
* :class:`NoiseLevelClock`: the noise level :math:`u = \tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}`
  of a linear SDE, optionally with the scaled state :math:`\hat x = x/\alpha_t` (Karras et al. 2022,
  eq. 4), in which the PF-ODE is

  .. math:: \frac{d\hat x}{d\tilde\sigma} = \frac{\hat x - D(\hat x; \tilde\sigma)}{\tilde\sigma}
            = -\tilde\sigma\,\alpha_t\,s_\theta(\alpha_t\hat x, t) = \hat\epsilon,

  close to straight lines where the noise dominates. Euler in this frame is DDIM.

Which one :func:`clock_for` picks, and why (dopri5 at rtol = atol = 1e-5 on the ring mixture's
exact score unless said otherwise):

* fixed-step methods on a linear SDE: the noise level, with the scaled state. In :math:`t`,
  Euler collapsed the modes of VE (64-D dispersion 0.015 / 0.05 / 0.35 at 10 / 20 / 50 steps,
  against 0.63 / 0.79 / 0.91 for Euler in :math:`\sigma`), and midpoint and RK4 at 10 or fewer
  evaluations gave dispersions of 1e4-1e5 (the tables in :mod:`scoresde.sampling.ode`).
* adaptive solves from data towards noise (the likelihood, ``encode``) on a drift-free linear SDE
  (``alpha_is_one``: VE): :math:`\sigma`, 15-20 % fewer evaluations (``benchmarks/likelihood.py``;
  encode 134 in :math:`\sigma` against 140 in :math:`t`).
* everything else: :math:`t`. Adaptive decoding (the ``ode`` sampler) on VE took 110 evaluations in
  :math:`t` against 212 in :math:`\sigma`; VP needs fewer in :math:`t` as well.

The scaled state changes the divergence (:math:`\nabla_{\hat x}\cdot` of the scaled field is
:math:`(\nabla\cdot v - D f)\,\tau'`), so a solve that carries the divergence never scales it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, LinearSDEBase


class Clock:
    r"""The identity clock :math:`u = t`; the base of the others.

    Attributes:
        scaled: whether :math:`dt/du \ne 1` (the system then folds it into its coefficients).
        scales_state: whether the solver's state is :math:`x/\alpha_t` rather than :math:`x`.
    """

    scaled = False
    scales_state = False

    def u(self, t: float) -> float:
        """The clock's value at time ``t`` (a float, before the solve)."""
        return t

    def t(self, u: Tensor) -> Tensor:
        """The time at clock value ``u`` (tensors, inside the solve)."""
        return u

    def dt_du(self, u: Tensor) -> Tensor:
        return torch.ones_like(u)

    def alpha(self, t: Tensor) -> Tensor:
        r"""The state's scale :math:`\alpha_t` (the solver's state is :math:`x/\alpha_t`); 1 when unscaled."""
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return "Clock(u=t)"


class NoiseLevelClock(Clock):
    r"""The noise level :math:`u = \tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}` of a linear SDE.

    :math:`t(u)` inverts the log-SNR and :math:`dt/du = -1/(\tilde\sigma\,d\lambda_t/dt)
    = 2\sigma_t^2/(\tilde\sigma_t g(t)^2)` (for VE, :math:`\sigma_t = \sigma_{min} r^t` and
    :math:`dt/du = 2\sigma/(d\sigma^2/dt)`). With ``scale_state`` the solver's state is
    :math:`x/\alpha_t`; on a drift-free SDE (VE) :math:`\alpha_t = 1` and nothing is scaled.
    """

    scaled = True

    def __init__(self, sde: LinearSDEBase, *, scale_state: bool = False):
        self.sde = sde
        self.scales_state = bool(scale_state) and not sde.alpha_is_one

    def u(self, t: float) -> float:
        return float((-self.sde.log_snr(torch.tensor(t, dtype=torch.float64))).exp())

    def t(self, u: Tensor) -> Tensor:
        return self.sde.t_from_log_snr(-torch.log(u))

    def dt_du(self, u: Tensor) -> Tensor:
        t = self.t(u).clamp(0, self.sde.T)
        return -1.0 / (u * self.sde.dlog_snr_dt(t))

    def alpha(self, t: Tensor) -> Tensor:
        if not self.scales_state:
            return torch.ones_like(t)
        return self.sde.marginal(t)[0]

    def __repr__(self) -> str:
        return f"NoiseLevelClock(u=sigma/alpha, scale_state={self.scales_state})"


def clock_for(sde: SDE, *, towards_noise: bool, fixed_steps: bool, scale_state: bool = True) -> Clock:
    r"""The clock of a solve of ``sde``'s PF-ODE (see the module for the choice and its measurements).

    Args:
        towards_noise: the solve runs from data to noise (increasing ``t``).
        fixed_steps: the method takes fixed steps (one per interval of the output times).
        scale_state: whether the state may be scaled by :math:`1/\alpha_t` (False when the solve
            carries the divergence).
    """
    if not isinstance(sde, LinearSDEBase):
        return Clock()
    if fixed_steps:
        return NoiseLevelClock(sde, scale_state=scale_state)
    if towards_noise and sde.alpha_is_one:
        return NoiseLevelClock(sde)
    return Clock()
