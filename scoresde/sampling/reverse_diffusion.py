r"""The reverse of the SDE's own discretisation (Song et al. 2021, eq. 46).

With :math:`x_t = x_{t-h} + F + G z` the forward chain of :meth:`SDE.discretize` (DDPM for VP,
SMLD for VE, Euler-Maruyama otherwise),

.. math:: x_{t-h} = x_t - F + G^2 s_\theta(x_t, t) + G z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, LinearSDEBase
from .base import Sampler, batch_time
from .euler_maruyama import linear_step
from .registry import register


@register
class ReverseDiffusion(Sampler):
    """Reverse diffusion; serves any SDE, one score evaluation per step. Weak order 1; strong order
    1 for additive noise, 1/2 otherwise (it agrees with Euler-Maruyama to :math:`O(h^2)` per step)."""

    name = "reverse_diffusion"

    def is_stochastic(self) -> bool:
        return True

    def order(self, sde: SDE) -> float:
        return 0.5 if sde.state_dependent_diffusion else 1.0

    def weak_order(self, sde: SDE) -> float:
        return 1.0

    def init(self, ctx, x):
        if isinstance(ctx.sde, LinearSDEBase):
            # F = a x and G do not depend on x: x' = (1 - a) x + G^2 s + G z, its coefficients once on the host
            t = torch.tensor(ctx.times_host, dtype=torch.float64)
            h = t[:-1] - t[1:]
            F, G = ctx.sde.discretize(torch.ones_like(h), t[:-1], h)
            G = torch.broadcast_to(G, h.shape)
            return list(zip((1 - F).tolist(), G.square().tolist(), G.tolist(), strict=True))
        return ctx.sde.reverse(ctx.score_fn)

    def step(self, ctx, i: int, x: Tensor, state):
        if isinstance(state, list):
            return linear_step(ctx, i, x, state[i]), state
        h = ctx.times[i] - ctx.times[i + 1]
        rev_f, rev_g = state.discretize(x, batch_time(ctx.times[i], x), h)
        return x - rev_f + torch.broadcast_to(rev_g, x.shape) * ctx.noise(x), state
