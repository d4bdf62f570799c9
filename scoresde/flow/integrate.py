r"""One solve of the probability-flow ODE with torchdiffeq, and its result.

:func:`solve` integrates a :class:`~scoresde.flow.ProbabilityFlow` through monotone output times
in the variable of :func:`~scoresde.flow.clock_for` and returns a :class:`FlowSolution` whatever
happened (diffrax-style): a ``status``, the time reached, and a message that says what to do about
a failure. :meth:`FlowSolution.raise_for_status` turns a failure into the one exception for it:
:class:`~scoresde.errors.NonFiniteError` for NaN/inf, :class:`~scoresde.errors.ODESolveError`
for an exhausted step budget or a collapsed step size.

Methods: torchdiffeq's adaptive ones (``rtol``/``atol``/``max_steps``) and its fixed-step Runge-Kutta
methods, which take one step per interval of the output times. torchdiffeq's fixed-grid Adams
methods are refused: ``explicit_adams`` raises its order up to 11 as the history grows, far past
the stability of Adams-Bashforth, so it gets worse with more steps in either direction
(:math:`dx/dt = -x` over [0, 1] in 40 steps: 0.417 for :math:`e^{-1} = 0.368`; backwards in the
ODE sampler its dispersion grew from 3e8 to 2e65 with the steps, with no error raised), and
``implicit_adams`` iterates its corrector to a tolerance, so its evaluations per step are not
known in advance.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torchdiffeq
from torch import Tensor

from ..errors import ArgumentError, NonFiniteError, ODESolveError, ScoreSDEError, check_choice
from .clock import clock_for
from .system import ProbabilityFlow

#: torchdiffeq's adaptive methods and their orders (rtol/atol and a step budget)
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: torchdiffeq's fixed-step methods offered, with their orders and score evaluations per step
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")
METHOD_ORDER = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2,
                "euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
STAGES = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
#: methods torchdiffeq has that give wrong answers or unknown costs here, and why
REFUSED_METHODS = {
    "explicit_adams": "torchdiffeq's fixed-grid Adams-Bashforth raises its order up to 11, beyond its "
                      "stability, and gets worse with more steps",
    "implicit_adams": "torchdiffeq's fixed-grid Adams-Moulton iterates to a tolerance, so its cost per step "
                      "is not known in advance",
}

#: the statuses of a FlowSolution
STATUSES = ("success", "max_steps", "non_finite", "step_underflow")


def check_method(method, *, fixed: bool = True) -> str:
    """One of the adaptive methods (and, with ``fixed``, the fixed-step ones); a refused torchdiffeq
    method is named with the reason."""
    if isinstance(method, str) and method in REFUSED_METHODS:
        use = "rk4 (4 evaluations per step) or dpm_solver's multistep (1)" if fixed else "dopri5"
        raise ArgumentError(f"method={method!r} is refused: {REFUSED_METHODS[method]}; use {use}")
    return check_choice("method", method, ADAPTIVE_METHODS + (FIXED_METHODS if fixed else ()))


def check_adaptive_method(method) -> str:
    """One of torchdiffeq's adaptive methods."""
    return check_method(method, fixed=False)


@dataclass(frozen=True)
class FlowSolution:
    """What :func:`solve` returns, failed or not.

    Attributes:
        ys: the states at the output times, stacked along a new first dimension (a tuple of such
            for a tuple state); None unless ``status == "success"``.
        status: ``"success"``, ``"max_steps"`` (the step budget ran out), ``"non_finite"`` (the
            drift or the solution became NaN/inf) or ``"step_underflow"`` (the step size collapsed).
        t_reached: the time the solver had reached (on success, the last output time); None when
            not known.
        message: what happened and what to try; empty on success.
        nfe: evaluations of the right-hand side.
    """

    ys: Tensor | tuple[Tensor, ...] | None
    status: str
    t_reached: float | None
    message: str
    nfe: int

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def raise_for_status(self, context: str = "") -> None:
        """Raise the failure's exception (nothing on success); ``context`` prefixes the message."""
        if self.ok:
            return
        msg = f"{context}: {self.message}" if context else self.message
        if self.status == "non_finite":
            raise NonFiniteError(msg)
        raise ODESolveError(msg, self.status)

    @property
    def final(self):
        """The state at the last output time (raises the failure's exception first)."""
        self.raise_for_status()
        return tuple(y[-1] for y in self.ys) if isinstance(self.ys, tuple) else self.ys[-1]


def solve(
    system: ProbabilityFlow,
    state,
    times,
    *,
    like: Tensor,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    progress: bool = False,
    desc: str = "PF-ODE",
) -> FlowSolution:
    """Integrate ``system`` from ``state`` at ``times[0]`` through the monotone ``times`` (floats).

    The solver steps in the variable of :func:`~scoresde.flow.clock_for` (``t``, or the noise level).
    Adaptive methods are controlled by ``rtol``/``atol``/``max_steps``; fixed-step methods take
    one step per interval of ``times``. ``like`` gives the dtype and device of the times. Arguments
    are taken as checked (the callers check them); failures come back in the result.
    """
    times = [float(t) for t in times]
    t0, t1 = times[0], times[-1]
    fixed = method in FIXED_METHODS
    clock = system.clock = clock_for(system.sde, towards_noise=t1 > t0, fixed_steps=fixed)
    us = torch.tensor([clock.u(t) for t in times], dtype=like.dtype, device=like.device)
    system.t_lo, system.t_hi = min(t0, t1), max(t0, t1)
    func = _Guarded(system, like.shape)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=abs(t1 - t0), desc=desc, leave=False,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| t-span {n:.3g}/{total:.3g} [{elapsed}]")
        func = _WithProgress(func, clock, bar, t0, t1)  # reads t on the host: the bar's price

    span = f"on the way from t={t0:g} to t={t1:g}"
    try:
        sol = torchdiffeq.odeint(
            func, state, us, rtol=rtol, atol=atol, method=method,
            # step_t: land a step exactly on t1 rather than stepping past it and interpolating,
            # so the score is never evaluated outside [eps, T]
            options=None if fixed else {"max_num_steps": max_steps, "step_t": us[-1:]},
        )
    except (AssertionError, ArgumentError) as err:
        # torchdiffeq signals its failures by assert; after a non-finite drift its next time is
        # NaN, which the SDE's time check refuses: both are reported as the drift's failure
        bad = system.tracker.first_time()
        if isinstance(err, ArgumentError) and bad is None:
            raise
        reached = None if system.t_last is None else float(system.t_last)
        at = "at an unknown time" if reached is None else f"at t={reached:.6g}"
        if bad is not None:
            return _failed(system, "non_finite", bad, _non_finite_message(bad, span))
        if "max_num_steps" in str(err):
            return _failed(system, "max_steps", reached,
                           f"the maximum number of solver steps (max_steps={max_steps}) was reached {at} {span}; "
                           "try increasing max_steps or loosening rtol/atol")
        return _failed(system, "step_underflow", reached,
                       f"the step size collapsed {at} {span} ({err}): the drift is not smooth there, e.g. a score "
                       "far outside its training range; try method='bosh3' or looser rtol/atol")
    finally:
        if bar is not None:
            bar.close()
    final = tuple(s[-1] for s in sol) if isinstance(sol, tuple) else (sol[-1],)
    if not all(bool(torch.isfinite(o).all()) for o in final):  # one host read, after the solve
        bad = system.tracker.first_time()
        return _failed(system, "non_finite", bad, _non_finite_message(bad, span, solution=True))
    return FlowSolution(ys=sol, status="success", t_reached=t1, message="", nfe=system.nfe)


def _non_finite_message(bad: float | None, span: str, solution: bool = False) -> str:
    where = "at an unknown time" if bad is None else f"at t={bad:.6g}"
    what = "solution" if solution and bad is None else "drift"
    return (f"the PF-ODE {what} became non-finite (NaN or inf) {where} {span}: check that score_fn is finite "
            "there (for data far outside the training range, also that it does not overflow in this dtype), "
            "or use more steps")


def _failed(system: ProbabilityFlow, status: str, t: float | None, message: str) -> FlowSolution:
    return FlowSolution(ys=None, status=status, t_reached=t if t is None or math.isfinite(t) else None,
                        message=message, nfe=system.nfe)


class _Guarded:
    """Calls the system, reporting a score_fn failure on the first call as an ArgumentError."""

    def __init__(self, system: ProbabilityFlow, x_shape):
        self.system = system
        self.x_shape = tuple(x_shape)

    def __call__(self, u, state):
        if self.system.nfe > 0:
            return self.system(u, state)
        with reporting_score_failures(self.x_shape):
            return self.system(u, state)


class _WithProgress:
    """Advances a progress bar by the span of t covered (one host read per evaluation)."""

    def __init__(self, func, clock, bar, t0: float, t1: float):
        self.func, self.clock, self.bar, self.t0, self.t1 = func, clock, bar, t0, t1
        self.done = 0.0

    def __call__(self, u, state):
        ahead = min(abs(float(self.clock.t(u)) - self.t0), abs(self.t1 - self.t0))
        if ahead > self.done:
            self.bar.update(ahead - self.done)
            self.done = ahead
        return self.func(u, state)


@contextmanager
def reporting_score_failures(x_shape):
    """Turn an exception raised by ``score_fn`` (a shape it refuses, a bug) into an ArgumentError
    that says it came from ``score_fn`` and with which input; scoresde's own errors pass through."""
    try:
        yield
    except ScoreSDEError as err:
        if not isinstance(err, ArgumentError) or str(err).startswith("score_fn rejected"):
            raise
        raise ArgumentError(
            f"score_fn rejected x of shape {tuple(x_shape)} (called as score_fn(x, t) with t of "
            f"shape ({x_shape[0]},)): {err}"
        ) from err
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ArgumentError(
            f"score_fn rejected x of shape {tuple(x_shape)} (called as score_fn(x, t) with t of "
            f"shape ({x_shape[0]},)): {err}"
        ) from err
