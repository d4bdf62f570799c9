r"""The ODE sampler: the probability-flow ODE (Song et al. 2021, eq. 13) from the prior to the data,

.. math:: \frac{dx}{dt} = f(x,t) - \tfrac12 g(t)^2\, s_\theta(x,t),

integrated by the flow engine (:mod:`scoresde.flow`), the same system and solve as the likelihood
and ``encode``/``decode``, in the variable of the engine's clock (:mod:`scoresde.flow.clock`):
fixed-step methods, one step per interval of the grid, step in the noise level :math:`\sigma` on a
drift-free SDE (VE) -- in :math:`t` they collapsed its modes (64-D dispersion 2e-4 / 0.07 / 0.40
with Euler at 10 / 20 / 50 evaluations, now 0.72 / 0.83 / 0.93) and blew up at few evaluations
(midpoint and RK4: 1e3-1e5 at 10, now 0.9 and 52) -- and in :math:`t` elsewhere, where that is as
good or better; adaptive methods step in :math:`t`.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import DEFAULT_MAX_STEPS, check_int, check_tolerance
from ..flow import ADAPTIVE_METHODS, METHOD_ORDER, STAGES, ProbabilityFlow, check_method, solve
from ..sde import SDE
from .base import Sampler
from .registry import register


@register
class ProbabilityFlowODE(Sampler):
    r"""Sample by solving the probability-flow ODE from :math:`t_{start}` to :math:`\varepsilon`.

    Args:
        method: an adaptive torchdiffeq solver (``dopri5`` default, ``dopri8``, ``bosh3``,
            ``fehlberg2``, ``adaptive_heun``; tolerances ``rtol``, ``atol``) or a fixed-step one
            (``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``: 1, 2, 2, 3, 4 evaluations per step
            of the grid; :func:`sample`'s ``steps``, default 100). ``explicit_adams`` and
            ``implicit_adams`` are refused (:mod:`scoresde.flow.integrate` says why).
        rtol, atol: tolerances of adaptive solvers.
        max_steps: step budget of adaptive solvers; exceeding it raises, naming the time reached.

    Serves any SDE. Its order is that of ``method``; deterministic: no noise is drawn.
    """

    name = "ode"
    default_steps = None
    solves_whole = True  # one torchdiffeq call: no hook between steps

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int = DEFAULT_MAX_STEPS):
        self.method = check_method(method)
        self.rtol = check_tolerance("rtol", rtol)
        self.atol = check_tolerance("atol", atol)
        self.max_steps = check_int("max_steps", max_steps)
        self.adaptive = method in ADAPTIVE_METHODS

    def options(self) -> dict:
        return dict(method=self.method, rtol=self.rtol, atol=self.atol)

    def order(self, sde: SDE) -> float:
        return float(METHOD_ORDER[self.method])

    def evaluations(self, steps: int, sde: SDE) -> int | None:
        return None if self.adaptive else STAGES[self.method] * steps

    def steps_for(self, steps: int | None) -> int | None:
        if self.adaptive:
            return steps  # only sets the output grid of the trajectory
        return 100 if steps is None else steps

    def solve(self, ctx, x: Tensor) -> Tensor:
        system = ProbabilityFlow(ctx.score_fn, ctx.sde)
        sol = solve(system, x, ctx.times_host, like=x, method=self.method, rtol=self.rtol, atol=self.atol,
                    max_steps=self.max_steps)
        sol.raise_for_status(f"sampler 'ode' ({self.method})")
        return sol.ys[ctx.wanted]
