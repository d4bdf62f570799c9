r"""The probability-flow ODE as a torchdiffeq system, and its solve.

For a forward SDE :math:`dx = f(x,t)\,dt + g(t)\,dW` whose diffusion depends on ``t`` only,
the probability-flow ODE (Song et al. 2021, eq. 13) is

.. math:: \frac{dx}{dt} = v(x, t) = f(x,t) - \tfrac12 g(t)^2 s_\theta(x,t).

Started at the data at :math:`t = \varepsilon` and integrated up to :math:`T` it maps
:math:`p_\varepsilon` onto :math:`p_T` (:mod:`scoresde.likelihood.maps`). For the likelihood
the state also carries :math:`\int_\varepsilon^t \nabla\!\cdot v(x_s, s)\,ds` (see :mod:`scoresde.likelihood.core`).

The system evaluates ``score_fn`` once per call and never reads a tensor's value (no host
synchronisation); it counts its calls in ``nfe`` and remembers, as device tensors, the latest
time it was called at and the first time its output stopped being finite, so that a failed
solve can say where it stopped.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torchdiffeq
from torch import Tensor

from ..errors import ArgumentError, ODESolveError, ScoreSDEError, check_choice
from ..sde import SDE, LinearSDEBase, ScoreFn, call_score
from .clock import clock_for
from .divergence import Batching, exact_divergence, hutchinson_divergence

TRACE_TYPES = ("exact", "hutchinson")

#: torchdiffeq's adaptive methods (rtol/atol and a step budget); the fixed-step ones take one
#: step per interval of the output times (the ODE sampler offers both, the likelihood adaptive only).
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


def check_adaptive_method(method) -> str:
    """One of torchdiffeq's adaptive methods."""
    return check_choice("method", method, ADAPTIVE_METHODS)


def check_flow_sde(sde) -> SDE:
    """An SDE whose probability-flow ODE this engine integrates (diffusion independent of x)."""
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if sde.state_dependent_diffusion:
        raise ArgumentError(
            f"sde must have a diffusion that depends on t only; {type(sde).__name__} sets "
            "state_dependent_diffusion=True, which the PF-ODE likelihood does not support"
        )
    return sde


class ProbabilityFlow:
    r"""The right-hand side :math:`(u, x) \mapsto v(x, t)\,dt/du`, optionally with its divergence.

    ``u`` is the integration variable of :func:`clock_for` (set by :func:`solve_path`); the
    factor :math:`dt/du` is folded into the scalar coefficients, so it costs nothing per element.

    Args:
        score_fn: ``score_fn(x, t)`` with ``t`` of shape ``(batch,)``.
        sde: the forward SDE; its diffusion must not depend on ``x``.
        trace: None (drift only), ``"exact"`` or ``"hutchinson"``.
        probes: for Hutchinson, the fixed probes ``(n, batch, *S)`` used for the whole solve.
        chunk_size: basis directions (exact) or probes (Hutchinson) per vmap chunk.

    ``batching`` (a :class:`~scoresde.likelihood.divergence.Batching`) decides at the first
    evaluation whether the vector-Jacobian products go through vmap or through the replicated
    batch (networks vmap cannot batch, e.g. diffusers UNets), once for the whole solve.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        sde: SDE,
        *,
        trace: str | None = None,
        probes: Tensor | None = None,
        chunk_size: int | None = None,
    ):
        self.score_fn = score_fn
        self.sde = sde
        self.trace = trace
        self.probes = probes
        self.chunk_size = chunk_size
        self.batching = Batching("auto")
        # the integration variable and interval: solve_path sets both for each solve's direction
        self.clock = clock_for(sde)
        self.t_lo, self.t_hi = 0.0, float(sde.T)
        # state-dependent g (sampling only; the likelihood refuses these SDEs): the PF-ODE drift
        # of SDE.reverse, which includes the -1/2 d(g^2)/dx term
        self._reverse = sde.reverse(score_fn, probability_flow=True) if sde.state_dependent_diffusion else None
        self.nfe = 0
        self.t_last: Tensor | None = None
        self.t_bad: Tensor | None = None  # first time the output went non-finite (inf if never)

    def field(self, x: Tensor, t: Tensor, tb: Tensor, scale: Tensor | None):
        """The drift (times ``scale`` = dt/du when given) as a function of ``x`` alone, at the
        fixed time ``t`` (a scalar; ``tb`` is it expanded to shape ``(batch,)``)."""
        sde, score_fn = self.sde, self.score_fn
        if isinstance(sde, LinearSDEBase):
            # f(t) and g(t) once, as scalars (every sample shares t); VE-type SDEs have no drift term
            half_g2 = 0.5 * sde.g(t).square()
            f = None if sde.alpha_is_one else sde.f(t)
            if scale is not None:
                half_g2 = half_g2 * scale
                f = None if f is None else f * scale
            if f is None:
                return lambda y: -half_g2 * call_score(score_fn, y, tb)
            return lambda y: f * y - half_g2 * call_score(score_fn, y, tb)
        if self._reverse is not None:
            pf = self._reverse
            return lambda y: pf.drift(y, tb) if scale is None else scale * pf.drift(y, tb)
        # g depends on t only, so g^2 is a constant of the field (computed outside any transform)
        g2 = torch.broadcast_to(sde.diffusion(x, tb), x.shape).square()
        if scale is None:
            return lambda y: sde.drift(y, tb) - 0.5 * g2 * call_score(score_fn, y, tb)
        return lambda y: scale * (sde.drift(y, tb) - 0.5 * g2 * call_score(score_fn, y, tb))

    def _record(self, t: Tensor, *outs: Tensor) -> None:
        # Bookkeeping with device tensors only: no host synchronisation inside the solve.
        self.nfe += 1
        self.t_last = t
        finite = torch.stack([torch.isfinite(o).all() for o in outs]).all()
        if self.t_bad is None:
            self.t_bad = torch.full_like(t, math.inf)
        self.t_bad = torch.where(finite | torch.isfinite(self.t_bad), self.t_bad, t)

    def __call__(self, u: Tensor, state):
        x = state if self.trace is None else state[0]
        clock = self.clock
        t, scale = (clock.t(u), clock.dt_du(u).to(x.dtype)) if clock.scaled else (u, None)
        # clamp: torchdiffeq's initial step-size probe may look beyond the interval's end
        t = t.to(x.dtype).clamp(self.t_lo, self.t_hi)
        v = self.field(x, t, t.expand(x.shape[0]).contiguous(), scale)
        if self.trace is None:
            out = v(x)
            self._record(t, out)
            return out
        # the field on k stacked copies of the batch, for the replicated divergence
        def stacked(y: Tensor) -> Tensor:
            return self.field(y, t, t.expand(y.shape[0]).contiguous(), scale)(y)

        kw = dict(batching=self.batching, stacked=stacked)
        if self.trace == "exact":
            out, div = exact_divergence(v, x, self.chunk_size, **kw)
        else:
            out, div = hutchinson_divergence(v, x, self.probes, self.chunk_size, **kw)
        self._record(t, out, div)
        return out, div


def solve(system: ProbabilityFlow, state, t0: float, t1: float, **kwargs):
    """Integrate ``system`` from ``t0`` to ``t1``; return the state at ``t1`` (see :func:`solve_path`)."""
    path = solve_path(system, state, [t0, t1], **kwargs)
    return tuple(p[-1] for p in path) if isinstance(path, tuple) else path[-1]


def solve_path(
    system: ProbabilityFlow,
    state,
    times,
    *,
    like: Tensor,
    method: str,
    rtol: float,
    atol: float,
    max_steps: int,
    progress: bool = False,
    desc: str = "PF-ODE",
):
    """Integrate ``system`` through the monotone ``times`` (floats) with torchdiffeq; return the
    states at all of them, stacked along a new first dimension (as ``torchdiffeq.odeint``).

    The solver steps in the variable of :func:`clock_for` (``t``, or VE's sigma towards noise).
    Adaptive methods are controlled by ``rtol``/``atol``/``max_steps``; fixed-step methods take
    one step per interval of ``times``. Failures come back as :class:`ODESolveError` naming the
    time the solver had reached.
    """
    t0, t1 = float(times[0]), float(times[-1])
    clock = system.clock = clock_for(system.sde, towards_noise=t1 > t0)
    times = torch.tensor([clock.u(float(t)) for t in times], dtype=like.dtype, device=like.device)
    system.t_lo, system.t_hi = min(t0, t1), max(t0, t1)
    guarded = _Guarded(system, like.shape)
    func, bar = guarded, None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=abs(t1 - t0), desc=desc, leave=False,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| t-span {n:.3g}/{total:.3g} [{elapsed}]")
        done = [0.0]

        def func(u, y):  # reads t on the host: the progress bar's price, off by default
            ahead = min(abs(float(clock.t(u)) - t0), abs(t1 - t0))
            if ahead > done[0]:
                bar.update(ahead - done[0])
                done[0] = ahead
            return guarded(u, y)

    try:
        sol = torchdiffeq.odeint(
            func, state, times, rtol=rtol, atol=atol, method=method,
            # step_t: land a step exactly on t1 rather than stepping past it and interpolating,
            # so the score is never evaluated outside [eps, T]
            options={"max_num_steps": max_steps, "step_t": times[-1:]} if method in ADAPTIVE_METHODS else None,
        )
    except (AssertionError, ArgumentError) as err:
        # torchdiffeq signals its failures by assert; after a non-finite drift its next time is
        # NaN, which the SDE's time check refuses: both are reported as the drift's failure
        bad = _bad_time(system)
        if isinstance(err, ArgumentError) and bad is None:
            raise
        msg = str(err)
        reached = _reached(system)
        if "max_num_steps" in msg:
            raise ODESolveError(
                f"the PF-ODE solve exceeded max_steps={max_steps} steps on [{t0:g}, {t1:g}] "
                f"(reached t={reached}); increase max_steps or loosen rtol/atol", "max_steps"
            ) from None
        if bad is not None:
            raise ODESolveError(
                f"the PF-ODE drift became non-finite (NaN or inf) at t={bad:.6g} on [{t0:g}, {t1:g}]: "
                "check that score_fn is finite there (for data far outside the training range, "
                "also that it does not overflow in this dtype)", "non_finite"
            ) from None
        raise ODESolveError(f"the PF-ODE solve failed at t={reached} on [{t0:g}, {t1:g}]: {msg} (the step size "
                            "collapsed: the drift is not smooth there, e.g. a score far outside its training "
                            "range; try method='bosh3' or looser rtol/atol)", "step_underflow") from None
    finally:
        if bar is not None:
            bar.close()
    final = tuple(s[-1] for s in sol) if isinstance(sol, tuple) else (sol[-1],)
    if not all(bool(torch.isfinite(o).all()) for o in final):  # one host read, after the solve
        bad = _bad_time(system)
        where = f"at t={bad:.6g}" if bad is not None else f"by t={t1:g}"
        raise ODESolveError(f"the PF-ODE solution became non-finite (NaN or inf) {where}", "non_finite")
    return sol


def _reached(system: ProbabilityFlow) -> str:
    return "unknown" if system.t_last is None else f"{float(system.t_last):.6g}"


def _bad_time(system: ProbabilityFlow) -> float | None:
    if system.t_bad is None:
        return None
    bad = float(system.t_bad)
    return bad if math.isfinite(bad) else None


# ---- encode / decode -----------------------------------------------------------------------------


class _Guarded:
    """Calls the system, reporting a score_fn failure on the first call as an ArgumentError."""

    def __init__(self, system: ProbabilityFlow, x_shape):
        self.system = system
        self.x_shape = tuple(x_shape)

    def __call__(self, t, state):
        if self.system.nfe > 0:
            return self.system(t, state)
        with reporting_score_failures(self.x_shape):
            return self.system(t, state)


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
