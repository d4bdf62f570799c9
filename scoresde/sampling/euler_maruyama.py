r"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6):

.. math:: dx = [f(x,t) - g(t)^2 \nabla_x\log p_t(x)]\,dt + g(t)\,d\bar W,

stepped from :math:`t_i` to :math:`t_{i+1} = t_i - h_i`:

.. math:: x_{i+1} = x_i - h_i\,[f(x_i,t_i) - g(t_i)^2 s_\theta(x_i,t_i)] + g(t_i)\sqrt{h_i}\,z_i.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, LinearSDEBase
from .base import Sampler, batch_time
from .coefficients import combine
from .registry import register


@register
class EulerMaruyama(Sampler):
    r"""Euler-Maruyama on the reverse SDE; serves any SDE, one score evaluation per step.

    Weak order 1; strong order 1 for additive noise (:math:`g` independent of x), 1/2 otherwise.
    On a linear SDE :math:`f(t)` and :math:`g(t)` are evaluated once on the grid.
    """

    name = "euler_maruyama"

    def is_stochastic(self) -> bool:
        return True

    def order(self, sde: SDE) -> float:
        return 0.5 if sde.state_dependent_diffusion else 1.0

    def weak_order(self, sde: SDE) -> float:
        return 1.0

    def init(self, ctx, x):
        if isinstance(ctx.sde, LinearSDEBase):
            # x' = x - h (f x - g^2 s) + g sqrt(h) z = (1 - h f) x + h g^2 s + g sqrt(h) z: the three
            # coefficients of each step, once, on the host
            t = torch.tensor(ctx.times_host, dtype=torch.float64)
            h = t[:-1] - t[1:]
            f, g = ctx.sde.f(t[:-1]), ctx.sde.g(t[:-1])
            return list(zip((1 - h * f).tolist(), (h * g.square()).tolist(), (g * h.sqrt()).tolist(), strict=True))
        return ctx.sde.reverse(ctx.score_fn)

    def step(self, ctx, i: int, x: Tensor, state):
        t = ctx.times[i]
        if isinstance(state, list):  # linear: one product and two fused multiply-adds
            return linear_step(ctx, i, x, state[i]), state
        h = t - ctx.times[i + 1]
        tb = batch_time(t, x)
        drift = state.drift(x, tb)
        gi = torch.broadcast_to(state.diffusion(x, tb), x.shape)
        return x - drift * h + gi * h.sqrt() * ctx.noise(x), state


def linear_step(ctx, i: int, x: Tensor, coefficients: tuple[float, float, float]) -> Tensor:
    r"""One step :math:`x_{i+1} = c_x x_i + c_s\,s_	heta(x_i, t_i) + c_z z` of a reverse chain of a linear
    SDE with host coefficients (Euler-Maruyama's, or the reverse of the SDE's own discretisation)."""
    c_x, c_s, c_z = coefficients
    return combine(c_x, x, [c_s, c_z], [ctx.score(x, batch_time(ctx.times[i], x)), ctx.noise(x)])
