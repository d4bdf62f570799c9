r"""Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Algorithms 1-2).

A linear SDE's PF-ODE is simplest in the scaled state :math:`\hat x = x/\alpha_t` against the
noise level :math:`\tilde\sigma = \sigma_t/\alpha_t = e^{-\lambda_t}` (Karras et al., eq. 4):

.. math:: \frac{d\hat x}{d\tilde\sigma} = \frac{\hat x - D(\hat x;\tilde\sigma)}{\tilde\sigma},\qquad
          D = \hat x_0 = \frac{x + \sigma_t^2 s_\theta(x, t)}{\alpha_t},

where :math:`t = t(\tilde\sigma)` inverts the log-SNR. Each step is an Euler step plus a trapezoidal
correction (2 score evaluations). With ``churn > 0`` (Algorithm 2), before each step the noise
level is raised from :math:`\tilde\sigma_i` to :math:`\hat\sigma = \tilde\sigma_i(1+\gamma_i)` by adding fresh
noise of variance :math:`\hat\sigma^2 - \tilde\sigma_i^2` (scaled by ``s_noise``), with
:math:`\gamma_i = \min(\text{churn}/N, \sqrt2 - 1)` for :math:`\tilde\sigma_i \in [s_{tmin}, s_{tmax}]`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import check_nonneg, check_range
from ..sde import SDE
from .base import FEW_STEP_END_LEVEL, MARGINALS, Sampler, batch_time
from .coefficients import combine
from .registry import register


@register
class Heun(Sampler):
    """Karras et al.'s Heun sampler on the PF-ODE of a linear SDE (closed-form marginals).

    Args:
        churn: :math:`S_{churn}`, total stochasticity (0: deterministic ODE solve).
        s_tmin, s_tmax: the range of noise levels :math:`\\tilde\\sigma` where churn applies.
        s_noise: :math:`S_{noise}`, scale of the added noise (slightly above 1 offsets detail loss).

    NFE = 2 per step. The default grid is the EDM schedule (``grid="edm"``, ``rho=7``). Order 2
    without churn; with churn the steps inject noise whose total does not vanish with more steps,
    and the moments converge at first order (weak order 1).
    """

    name = "heun"
    requires = (MARGINALS,)
    evaluations_per_step = 2
    default_steps = 50
    default_grid = "edm"
    default_end_level = FEW_STEP_END_LEVEL

    def __init__(self, churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0):
        self.churn = check_nonneg("churn", churn)
        self.s_tmin = check_nonneg("s_tmin", s_tmin)
        self.s_tmax = check_range("s_tmax", s_tmax, self.s_tmin, math.inf, low_closed=True, high_closed=True)
        self.s_noise = check_nonneg("s_noise", s_noise)

    def options(self) -> dict:
        return dict(churn=self.churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise)

    def is_stochastic(self) -> bool:
        return self.churn > 0

    def order(self, sde: SDE) -> float | None:
        return None if self.churn > 0 else 2.0

    def weak_order(self, sde: SDE) -> float:
        return 1.0 if self.churn > 0 else 2.0

    def init(self, ctx, x):
        alphas, sigmas = ctx.marginals
        levels = sigmas / alphas
        n = ctx.n_steps
        a, s, _ = ctx.host_marginals
        lev = [si / ai for ai, si in zip(a, s, strict=True)]
        # which steps churn, decided once on the host before the loop (no sync inside a step)
        churn_at = [self.churn > 0 and self.s_tmin <= lev[i] <= self.s_tmax for i in range(n)]
        # a step without churn in x = alpha x_hat: the slope (x_hat - D)/sigma_tilde is the noise
        # prediction -sigma s, so both stages are combinations of x and the scores with host coefficients
        plain = []
        for i in range(n):
            c, dlev = a[i + 1] / a[i], lev[i + 1] - lev[i]
            u1, u2 = -a[i + 1] * dlev * s[i], -a[i + 1] * dlev * s[i + 1]
            plain.append((c, u1, 0.5 * u1, 0.5 * u2))
        return levels, churn_at, min(self.churn / n, math.sqrt(2) - 1), plain

    def step(self, ctx, i: int, x: Tensor, state):
        levels, churn_at, gamma, plain = state
        sde, times = ctx.sde, ctx.times
        if not churn_at[i]:
            c, u1, v1, v2 = plain[i]
            s1 = ctx.score(x, batch_time(times[i], x))
            x_mid = combine(c, x, [u1], [s1])  # the Euler stage
            return combine(c, x, [v1, v2], [s1, ctx.score(x_mid, batch_time(times[i + 1], x))]), state
        alphas, sigmas = ctx.marginals

        def slope(xh: Tensor, t: Tensor, a: Tensor, s: Tensor) -> Tensor:  # (x_hat - D) / sigma_tilde
            x = a * xh
            denoised = sde.to_x0(ctx.score(x, batch_time(t, x)), x, t, "score", marginal=(a, s))
            return (xh - denoised) / (s / a)

        # churn may not raise the level above the starting one
        lev = levels[i]
        lev_hat = torch.minimum(lev * (1 + gamma), levels[0])
        xh = x / alphas[i]
        xh = xh + (lev_hat.square() - lev.square()).clamp_min(0).sqrt() * self.s_noise * ctx.noise(xh)
        t_cur = sde.t_from_log_snr(-lev_hat.log()).clamp(times[-1], times[0])
        a_cur, s_cur = sde.marginal(t_cur)
        lev = s_cur / a_cur
        d = slope(xh, t_cur, a_cur, s_cur)
        dlev = levels[i + 1] - lev
        d_next = slope(xh + dlev * d, times[i + 1], alphas[i + 1], sigmas[i + 1])
        xh = xh + dlev * 0.5 * (d + d_next)
        return xh * alphas[i + 1], state
