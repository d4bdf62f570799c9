r"""The ODE sampler: the probability-flow ODE (Song et al. 2021, eq. 13) from the prior to the data,

.. math:: \frac{dx}{dt} = f(x,t) - \tfrac12 g(t)^2\, s_\theta(x,t),

integrated by the same torchdiffeq system as the likelihood and ``encode``/``decode``
(:mod:`scoresde.likelihood.flow`), with fixed-step methods added for equal-cost comparisons.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import DEFAULT_MAX_STEPS, check_choice, check_int, check_tolerance
from ..likelihood.flow import ADAPTIVE_METHODS, FIXED_METHODS, ODESolveError, ProbabilityFlow, solve_path
from .base import NonFiniteError, Sampler, SolveContext, register

ORDER = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2,
         "euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4, "explicit_adams": 4, "implicit_adams": 4}


def _check_method(method: str) -> str:
    return check_choice("method", method, ADAPTIVE_METHODS + FIXED_METHODS)


@register
class ProbabilityFlowODE(Sampler):
    r"""Sample by solving the probability-flow ODE from :math:`t_{start}` to :math:`\varepsilon` with torchdiffeq.

    Args:
        method: an adaptive solver (``dopri5`` default, ``dopri8``, ``bosh3``, ``fehlberg2``,
            ``adaptive_heun``; tolerances ``rtol``, ``atol``) or a fixed-step one (``euler``,
            ``midpoint``, ``heun2``, ``heun3``, ``rk4``, ``explicit_adams``, ``implicit_adams``;
            the ``steps`` of :func:`sample`).
        rtol, atol: tolerances of adaptive solvers.
        max_steps: step budget of adaptive solvers; exceeding it raises, naming the time reached.

    The order is that of ``method``. Deterministic: no noise is drawn.
    """

    name = "ode"
    default_steps = None
    supports_projection = False  # one torchdiffeq call: no hook between steps

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = DEFAULT_MAX_STEPS):
        self.method = _check_method(method)
        self.rtol = check_tolerance("rtol", rtol)
        self.atol = check_tolerance("atol", atol)
        self.max_steps = check_int("max_steps", max_steps)
        self.order = float(ORDER[method])
        self.adaptive = method in ADAPTIVE_METHODS

    def options(self) -> dict:
        return dict(method=self.method, rtol=self.rtol, atol=self.atol)

    def steps_for(self, steps: int | None) -> int | None:
        if self.adaptive:
            return steps  # only sets the output grid of the trajectory
        return 100 if steps is None else steps

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        # The likelihood's PF-ODE system and solve: one integrator for encode, decode and sampling
        # (VE steps in its noise level there). The output times are read once, before the solve.
        system = ProbabilityFlow(ctx.score_fn, ctx.sde)
        try:
            ys = solve_path(system, x, times.tolist(), like=x, method=self.method, rtol=self.rtol,
                            atol=self.atol, max_steps=self.max_steps)
        except ODESolveError as err:
            if err.reason != "max_steps":  # NaN/inf, or a step-size underflow (usually NaN too)
                raise NonFiniteError(f"the ODE sampler ({self.method}): {err}") from None
            raise
        # the ODE is solved in one call: hand the intermediate states to the context afterwards
        for i in range(1, len(times) - 1):
            ctx.step_done(ys[i], times[i])
        return ctx.step_done(ys[-1], times[-1])
