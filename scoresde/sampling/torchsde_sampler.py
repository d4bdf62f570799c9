r"""The reverse SDE handed to :func:`torchsde.sdeint` (through :func:`scoresde.sde.torchsde_integrate`).

The Brownian motion is a :class:`torchsde.BrownianInterval` seeded by the caller (``seed``, or an
entropy drawn once from the caller's generator), so the same seed gives the same path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice
from ..sde import torchsde_integrate
from .base import Sampler, SolveContext, register

# Itô methods torchsde offers for diagonal noise, with their strong orders under additive noise.
METHODS = {"euler": 1.0, "milstein": 1.0, "srk": 1.5}


@register
class TorchsdeSampler(Sampler):
    """Euler-Maruyama-type solvers of torchsde on the reverse SDE, with fixed steps on a uniform grid.

    Args:
        method: ``"euler"`` (default), ``"milstein"`` or ``"srk"`` (Itô, diagonal noise).

    Needs one generator for the whole batch (a torchsde Brownian motion is shared by the batch),
    so per-sample seeds are not supported. The result is the same whether or not the trajectory
    is recorded only up to round-off in torchsde's step placement.
    """

    name = "torchsde"
    stochastic = True
    supports_projection = False

    def __init__(self, method: str = "euler"):
        self.method = check_choice("method", method, tuple(METHODS))
        # weak order 1 for all three on additive noise (srk: higher strong order, same weak order 1 here)
        self.order = 1.0

    def options(self) -> dict:
        return dict(method=self.method)

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        if ctx.noise.per_sample:
            raise ArgumentError("sampler 'torchsde' cannot use per-sample seeds (its Brownian motion spans the batch)")
        steps = times[:-1] - times[1:]
        rtol = max(1e-6, 1000 * torch.finfo(times.dtype).eps)  # grid round-off in float32
        if len(times) > 2 and not torch.allclose(steps, steps.mean().expand_as(steps), rtol=rtol, atol=0):
            raise ArgumentError("sampler 'torchsde' takes fixed steps: use grid='uniform'")
        # a hair above the spacing: round-off in torchsde's accumulated time must not leave a
        # ~1e-16 final step, which makes its Brownian interval build an enormous dependency tree
        dt = float(steps.mean()) * (1 + 1e-9)
        gen = ctx.noise.generator
        entropy = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device if gen is not None else None))
        rsde = ctx.sde.reverse(ctx.score_fn)
        outs = times if ctx.record else times[[0, -1]]
        ys = torchsde_integrate(rsde, x, outs, method=self.method, dt=dt, seed=entropy)
        for i in range(1, len(outs) - 1):
            ctx.step_done(ys[i], outs[i])
        return ctx.step_done(ys[-1], outs[-1])
