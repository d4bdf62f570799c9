r"""The reverse SDE handed to :func:`torchsde.sdeint` (through :func:`scoresde.sde.torchsde_integrate`).

The Brownian motion is a :class:`torchsde.BrownianInterval` seeded by the caller (``seed``, or an
entropy drawn once from the caller's generator), so the same seed gives the same path.

**Evaluations.** ``euler`` and ``milstein`` take one per step, as ``euler_maruyama`` does;
``srk`` ten per step (torchsde's SRID2 scheme for diagonal noise has four stages and re-evaluates
the earlier stages' drifts in each), so a one-step ``srk`` solve with the final denoising
evaluation is 11 and it cannot be held to a budget below that. (torchsde's own check of the
drift's shape before a solve is answered without evaluating the score:
:class:`~scoresde.sde.torchsde_adapter.TorchsdeAdapter`.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice
from ..sde import SDE, torchsde_integrate
from .base import Sampler
from .registry import register

#: torchsde's Ito methods for diagonal noise: (strong order under additive noise, evaluations per step)
METHODS = {"euler": (1.0, 1), "milstein": (1.0, 1), "srk": (1.5, 10)}


@register
class TorchsdeSampler(Sampler):
    """Euler-Maruyama-type solvers of torchsde on the reverse SDE, with fixed steps on a uniform grid.

    Args:
        method: ``"euler"`` (default), ``"milstein"`` or ``"srk"`` (Ito, diagonal noise).

    Serves any SDE. Needs one generator for the whole batch (a torchsde Brownian motion is shared
    by the batch), so per-sample seeds are not supported. Weak order 1 for all three (srk's higher
    order is strong, under additive noise).
    """

    name = "torchsde"
    solves_whole = True

    def __init__(self, method: str = "euler"):
        self.method = check_choice("method", method, tuple(METHODS))

    def options(self) -> dict:
        return dict(method=self.method)

    def is_stochastic(self) -> bool:
        return True

    def order(self, sde: SDE) -> float:
        return 0.5 if sde.state_dependent_diffusion and self.method == "euler" else METHODS[self.method][0]

    def weak_order(self, sde: SDE) -> float:
        return 1.0

    def evaluations(self, steps: int, sde: SDE) -> int:
        return METHODS[self.method][1] * steps

    def solve(self, ctx, x: Tensor) -> Tensor:
        if ctx.per_sample_seeds:
            raise ArgumentError("sampler 'torchsde' cannot use per-sample seeds (its Brownian motion spans the batch)")
        times = torch.tensor(ctx.times_host, dtype=torch.float64)
        steps = times[:-1] - times[1:]
        if len(times) > 2 and not torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=0):
            raise ArgumentError("sampler 'torchsde' takes fixed steps: use grid='uniform'")
        # a hair above the spacing: round-off in torchsde's accumulated time must not leave a
        # ~1e-16 final step, which makes its Brownian interval build an enormous dependency tree
        dt = float(steps.mean()) * (1 + 1e-9)
        gen = ctx.generator
        entropy = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device if gen is not None else None))
        rsde = ctx.sde.reverse(ctx.score_fn)
        return torchsde_integrate(rsde, x, ctx.times[ctx.wanted], method=self.method, dt=dt, seed=entropy)
