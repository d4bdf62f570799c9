r"""The variable the ODE solver steps in (the engine's *clock*).

Substituting :math:`t = \tau(u)` in the PF-ODE :math:`dx/dt = v(x, t)` gives
:math:`dx/du = v(x, \tau(u))\,\tau'(u)`: the same solution and the same divergence integral
:math:`\int\nabla\!\cdot v\,dt = \int\nabla\!\cdot v\,\tau'(u)\,du`; what changes is where a
solver places its steps and how large its local error is. Two clocks:

* :class:`Clock`: :math:`u = t`.
* :class:`NoiseLevelClock`: the noise level :math:`u = \tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}`
  of a linear SDE. On a drift-free one (VE, :math:`\alpha_t = 1`) the PF-ODE in :math:`\sigma` is
  EDM's :math:`dx/d\sigma = -\sigma\,s_\theta(x, \sigma)`, close to straight lines where the noise
  dominates the data's scale; Euler in :math:`\sigma` is k-diffusion's Euler (and DDIM).

:func:`clock_for` steps in :math:`\sigma` on a drift-free linear SDE (``sde.alpha_is_one``: VE)
for fixed-step methods and for solves towards noise, and in :math:`t` otherwise. Measured with the
exact score of the ring mixture (2-D) and of ``random_mixture(64)``, 2000 samples, VE (0.01, 50)
and VP (0.1, 20) at eps = 1e-5, grid uniform in t; the dispersion inside modes (1 is exact) at
10 / 20 / 50 evaluations:

* VE, Euler: in t 1.07 0.94 0.81 (2-D), 2e-4 0.067 0.40 (64-D: the modes collapse); in sigma
  1.77 1.28 1.06 and 0.72 0.83 0.93 (issue 13 measured k-diffusion's Euler in sigma at 0.63 0.79 0.91).
* VE, midpoint: in t 2.9e3 5.3 1.1 and 1.3e3 6.1 1.2; in sigma 1.4 1.06 1.01 and 0.88 0.98 1.00.
* VE, RK4: in t 1.7e5 1.3 0.99 and 1.6e4 3.2 1.02; in sigma 277 1.13 0.98 and 52 1.08 1.00
  (two steps of RK4 are too few either way).
* VP, Euler: in t 1.24 1.03 0.98 and 0.99 0.98 0.99; in sigma/alpha 1.36 1.06 0.98 and 1.37 1.12 1.03.
* VP, RK4: in t 3.0 1.15 0.98 and 1.39 1.01 1.00; in sigma/alpha 16.7 1.18 0.98 and 16.1 1.01 1.00.

(sub-VP behaves like VP; scaling the state by :math:`1/\alpha_t` as well, Karras et al.'s frame,
did not help VP either: Euler 0.59 0.77 0.90 in 64-D.) Adaptive solves (dopri5 at rtol = atol =
1e-5): from data towards noise (the likelihood, ``encode``) VE needs 15-20 % fewer evaluations in
:math:`\sigma` (``benchmarks/likelihood.py``; encode 134 against 140), but from noise to data (the
``ode`` sampler) 212 in :math:`\sigma` against 110 in :math:`t`; VP needs fewer in :math:`t` both ways.

At equal accuracy (the likelihood with the exact trace and the exact prior, mean per-point error
against the mixture's exact :math:`\log p_\varepsilon`, dopri5 at rtol = atol = 1e-3 / 1e-4 / 1e-5;
2-D ring, 256 points; ``random_mixture(64)``, 64 points), evaluations in t / :math:`\sigma` /
:math:`\log\sigma` (equal steps in log-SNR):

* VP 2-D: 63 / 87 / 93, 93 / 123 / 135, 111 / 159 / 177, errors within 2x of each other at each
  tolerance; VP 64-D: 141 / 135 / 99 (errors 0.56 / 0.45 / 1.7), 159 / 183 / 231, 189 / 213 / 249
  (errors 5.0e-3 / 5.8e-3 / 4.9e-3).
* VE 2-D: 93 / 75 / 93, 111 / 111 / 111, 153 / 141 / 171 (errors 8.5e-5 / 6.8e-5 / 7.9e-5);
  VE 64-D: 123 / 123 / 141, 153 / 153 / 171, 243 / 207 / 261 (errors 2.7e-3 / 2.2e-3 / 2.5e-3).

So t stays the likelihood's variable on VP and :math:`\sigma` on VE; log-SNR is the worst of the
three on both (2026-12-02).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, LinearSDEBase


class Clock:
    r"""The identity clock :math:`u = t`; the base of the others.

    Attributes:
        scaled: whether :math:`dt/du \ne 1` (the system then folds it into its coefficients).
    """

    scaled = False

    def u(self, t: float) -> float:
        """The clock's value at time ``t`` (a float, before the solve)."""
        return t

    def t(self, u: Tensor) -> Tensor:
        """The time at clock value ``u`` (tensors, inside the solve)."""
        return u

    def dt_du(self, u: Tensor, t: Tensor) -> Tensor:
        """:math:`dt/du` at clock value ``u``, whose time ``t = self.t(u)`` the caller has computed."""
        return torch.ones_like(u)

    def drift_coefficients(self, sde: LinearSDEBase, u: Tensor, t: Tensor) -> tuple[Tensor | None, Tensor]:
        r"""The linear SDE's PF-ODE in this clock, :math:`dx/du = a\,x - b\,s(x, t)`: ``(a, b)`` =
        :math:`(f(t)\,dt/du,\ \tfrac12 g(t)^2\,dt/du)`, with ``a`` None for a drift-free SDE."""
        b = 0.5 * sde.g(t).square()
        a = None if sde.alpha_is_one else sde.f(t)
        if not self.scaled:
            return a, b
        scale = self.dt_du(u, t)
        return (None if a is None else a * scale), b * scale

    def __repr__(self) -> str:
        return "Clock(u=t)"


class NoiseLevelClock(Clock):
    r"""The noise level :math:`u = \tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}` of a linear SDE.

    :math:`t(u)` inverts the log-SNR and :math:`dt/du = -1/(\tilde\sigma\,d\lambda_t/dt)
    = 2\sigma_t^2/(\tilde\sigma_t g(t)^2)`; for VE, :math:`\sigma_t = \sigma_{min} r^t` and
    :math:`dt/du = 2\sigma/(d\sigma^2/dt)`.
    """

    scaled = True

    def __init__(self, sde: LinearSDEBase):
        self.sde = sde

    def u(self, t: float) -> float:
        return float((-self.sde.log_snr(torch.tensor(t, dtype=torch.float64))).exp())

    def t(self, u: Tensor) -> Tensor:
        return self.sde.t_from_log_snr(-torch.log(u))

    def dt_du(self, u: Tensor, t: Tensor) -> Tensor:
        return -1.0 / (u * self.sde.dlog_snr_dt(t))

    def drift_coefficients(self, sde: LinearSDEBase, u: Tensor, t: Tensor) -> tuple[Tensor | None, Tensor]:
        r"""As :meth:`Clock.drift_coefficients`; on a drift-free SDE in closed form: :math:`u = \sigma_t`
        and :math:`dt/du = 2\sigma_t^2/(u\,g^2)`, so :math:`b = \tfrac12 g^2\,dt/du = u` exactly and the
        field is :math:`-u\,s` (k-diffusion's :math:`dx/d\sigma`), without :math:`g` or :math:`dt/du`."""
        if sde.alpha_is_one:
            return None, u
        return super().drift_coefficients(sde, u, t)

    def __repr__(self) -> str:
        return "NoiseLevelClock(u=sigma/alpha)"


def clock_for(sde: SDE, *, towards_noise: bool, fixed_steps: bool) -> Clock:
    r"""The clock of a solve of ``sde``'s PF-ODE: the noise level on a drift-free linear SDE (VE)
    for fixed-step methods and for solves towards noise, :math:`t` otherwise (see the module for
    the measurements behind the choice).

    Args:
        towards_noise: the solve runs from data to noise (increasing ``t``).
        fixed_steps: the method takes fixed steps (one per interval of the output times).
    """
    drift_free = isinstance(sde, LinearSDEBase) and sde.alpha_is_one
    return NoiseLevelClock(sde) if drift_free and (fixed_steps or towards_noise) else Clock()
