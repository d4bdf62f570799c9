r"""Ancestral sampling: one step of the reverse Gaussian chain of the forward kernel.

With :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`
and the Tweedie estimate :math:`\hat x_0 = (x_t + \sigma_t^2 s_\theta)/\alpha_t`, the mean of
:math:`q(x_s \mid x_t, \hat x_0)` simplifies to

.. math:: \mu = \frac{x_t + \sigma_{t|s}^2\, s_\theta(x_t, t)}{\alpha_{t|s}},\qquad
          x_s = \mu + v^{1/2} z,

with the variance ``variance="posterior"``: :math:`v = \sigma_{t|s}^2\sigma_s^2/\sigma_t^2` (DDPM's
:math:`\tilde\beta`, SMLD's ancestral step on VE: exact for a point mass, too small otherwise) or
``variance="forward"``: :math:`v = \sigma_{t|s}^2` (DDPM's :math:`\beta`, Song et al.'s ancestral
predictor for VP: exact for standard normal data, too large otherwise). The true reverse
transition lies in between; both are weak order 1.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..errors import check_choice
from ..sde import SDE
from .base import MARGINALS, Sampler
from .euler_maruyama import linear_step
from .registry import register


@register
class Ancestral(Sampler):
    """Ancestral sampling on a linear SDE (closed-form marginals); one score evaluation per step.

    Args:
        variance: ``"posterior"``, ``"forward"`` or None (default: ``"forward"`` for an SDE with
            drift -- VP, sub-VP, DiscreteVPSDE, as Song et al. --, ``"posterior"`` for a drift-free
            one, ``sde.alpha_is_one``: VE, as SMLD).

    With the posterior variance on a DDPM timestep grid this is DDPMScheduler's chain, draw for draw.
    """

    name = "ancestral"
    requires = (MARGINALS,)

    def __init__(self, variance: str | None = None):
        self.variance = check_choice("variance", variance, (None, "posterior", "forward"))

    def options(self) -> dict:
        return dict(variance=self.variance)

    def is_stochastic(self) -> bool:
        return True

    def order(self, sde: SDE) -> float:
        return 1.0  # additive noise; its mean and std agree with Euler-Maruyama's to O(h^2) per step

    def weak_order(self, sde: SDE) -> float:
        return 1.0

    def init(self, ctx, x):
        variance = self.variance or ("posterior" if ctx.sde.alpha_is_one else "forward")
        a, s, _ = ctx.host_marginals
        coefs = []  # x' = (x + var s)/a_ts + std z = c_x x + c_s s + std z, on the host
        for i in range(ctx.n_steps):
            a_ts = a[i] / a[i + 1]
            var_ts = max(s[i] ** 2 - (a_ts * s[i + 1]) ** 2, 0.0)
            std = math.sqrt(var_ts) * (s[i + 1] / s[i] if variance == "posterior" else 1.0)
            coefs.append((1 / a_ts, var_ts / a_ts, std))
        return coefs

    def step(self, ctx, i: int, x: Tensor, coefs):
        return linear_step(ctx, i, x, coefs[i]), coefs
