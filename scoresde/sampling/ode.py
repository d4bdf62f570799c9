r"""The probability-flow ODE (Song et al. 2021, eq. 13) solved with torchdiffeq:

.. math:: \frac{dx}{dt} = f(x,t) - \tfrac12 g(t)^2\, s_\theta(x,t).

Its solution map is deterministic and invertible: it carries :math:`p_{t_0}` to :math:`p_{t_1}` in
either direction, so the same code samples (T to eps) and encodes (eps to T).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchdiffeq import odeint

from ..sde import SDE
from .base import NonFiniteError, Sampler, ScoreFn, SolveContext, check_int, register

ADAPTIVE = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}
FIXED = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4, "explicit_adams": 4, "implicit_adams": 4}


def _check_method(method: str) -> str:
    if method not in ADAPTIVE and method not in FIXED:
        raise ValueError(
            f"method must be a torchdiffeq solver, one of {sorted(ADAPTIVE) + sorted(FIXED)}, got {method!r}"
        )
    return method


def _check_tol(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0 and v < 1):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return v


def _solve(ctx_score: ScoreFn, sde: SDE, x: Tensor, times: Tensor, method: str, rtol: float,
           atol: float, max_steps: int) -> tuple[Tensor, Tensor]:
    """Integrate the PF-ODE through ``times``; returns (states at ``times``, last time evaluated)."""
    pf = sde.reverse(ctx_score, probability_flow=True)
    last_t = torch.full((), float("nan"), dtype=x.dtype, device=x.device)

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        nonlocal last_t
        last_t = t.detach()
        return pf.drift(y, t.expand(y.shape[0]))

    # The score may only be evaluated inside [0, T]: step_t makes the solver land on the last time
    # instead of stepping past it and interpolating, and an explicit first_step skips torchdiffeq's
    # initial-step probe, which evaluates the function at a guessed (possibly outside) time.
    span = (times[-1] - times[0]).abs()
    options = (
        {"max_num_steps": max_steps, "step_t": times[-1:], "first_step": span * 1e-3}
        if method in ADAPTIVE else None
    )
    try:
        ys = odeint(rhs, x, times, method=method, rtol=rtol, atol=atol, options=options)
    except AssertionError as err:  # torchdiffeq reports NaN as a dt underflow, and the step budget
        t_reached = float(last_t)
        if "max_num_steps" in str(err):
            raise RuntimeError(
                f"the adaptive ODE solver ({method}) reached its maximum number of steps "
                f"({max_steps}) at t={t_reached:.6g}; increase max_steps or loosen rtol/atol"
            ) from None
        raise NonFiniteError(
            f"the ODE solver ({method}) failed at t={t_reached:.6g} (step size underflow: the "
            f"state or score_fn became non-finite, or the ODE is too stiff): {err}"
        ) from None
    return ys, last_t


def pf_ode_solve(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t_from: float,
    t_to: float,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    max_steps: int = 100_000,
) -> Tensor:
    """Carry ``x`` at time ``t_from`` to time ``t_to`` along the probability-flow ODE.

    ``t_to > t_from`` encodes (data towards noise), ``t_to < t_from`` decodes. Adaptive methods use
    ``rtol``/``atol``; fixed-step methods take ``steps`` uniform steps.
    """
    _check_method(method)
    for name, v in (("t_from", t_from), ("t_to", t_to)):
        if not 0 <= float(v) <= sde.T:
            raise ValueError(f"{name} must lie in [0, T] = [0, {sde.T:g}], got {v!r}")
    if method in FIXED:
        steps = check_int("steps", steps if steps is not None else 100)
        times = torch.linspace(float(t_from), float(t_to), steps + 1, dtype=x.dtype, device=x.device)
    else:
        times = torch.tensor([float(t_from), float(t_to)], dtype=x.dtype, device=x.device)
    ys, _ = _solve(score_fn, sde, x, times, method, rtol, atol, max_steps)
    return ys[-1]


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

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 100_000):
        self.method = _check_method(method)
        self.rtol = _check_tol("rtol", rtol)
        self.atol = _check_tol("atol", atol)
        self.max_steps = check_int("max_steps", max_steps)
        self.order = float(ADAPTIVE.get(method) or FIXED[method])
        self.adaptive = method in ADAPTIVE

    def options(self) -> dict:
        return dict(method=self.method, rtol=self.rtol, atol=self.atol)

    def steps_for(self, steps: int | None) -> int | None:
        if self.adaptive:
            return steps  # only sets the output grid of the trajectory
        return 100 if steps is None else steps

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        ys, _ = _solve(ctx.score_fn, ctx.sde, x, times, self.method, self.rtol, self.atol, self.max_steps)
        # the ODE is solved in one call: hand the intermediate states to the context afterwards
        for i in range(1, len(times) - 1):
            ctx.step_done(ys[i], times[i])
        return ctx.step_done(ys[-1], times[-1])
