r"""The probability-flow ODE as a right-hand side for torchdiffeq.

For a forward SDE :math:`dx = f(x,t)\,dt + g(x,t)\,dW` the probability-flow ODE (Song et al.
2021, eq. 13) is

.. math:: \frac{dx}{dt} = v(x, t) = f(x,t) - \tfrac12 g(t)^2 s_\theta(x,t)

when :math:`g` depends on ``t`` only, and :meth:`SDE.reverse`'s probability-flow drift (which adds
:math:`-\tfrac12\nabla\cdot g^2`) otherwise. Started at the data at :math:`t = \varepsilon` and
integrated up to :math:`T` it maps :math:`p_\varepsilon` onto :math:`p_T`; integrated back it samples.

:class:`ProbabilityFlow` evaluates ``score_fn`` once per call, in the variable of its clock
(:mod:`scoresde.flow.clock`), and never reads a tensor's value: it counts its calls (``nfe``),
keeps the latest time it was called at, and tracks on the device the first time its output stopped
being finite (:class:`~scoresde.flow.tracking.NonFiniteTracker`), so that a failed solve can say
where it stopped. Subclasses may return more than the drift from :meth:`ProbabilityFlow.evaluate`
(the likelihood adds the divergence).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..sde import SDE, LinearSDEBase, ScoreFn, call_score
from .clock import Clock
from .tracking import NonFiniteTracker


def check_flow_sde(sde, *, what: str = "the PF-ODE likelihood") -> SDE:
    """An SDE whose probability-flow ODE carries a divergence this engine can integrate
    (diffusion independent of x)."""
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if sde.state_dependent_diffusion:
        raise ArgumentError(
            f"sde must have a diffusion that depends on t only; {type(sde).__name__} sets "
            f"state_dependent_diffusion=True, which {what} does not support"
        )
    return sde


class ProbabilityFlow:
    r"""The right-hand side :math:`(u, y) \mapsto dy/du` of the PF-ODE in the variable of its clock.

    With the identity clock :math:`dx/du = v(x, t)`; with a noise-level clock the factor
    :math:`dt/du` is folded into the scalar coefficients (free per element).

    Args:
        score_fn: ``score_fn(x, t)`` with ``t`` of shape ``(batch,)``.
        sde: the forward SDE.

    :func:`~scoresde.flow.integrate.solve` sets ``clock`` and the interval ``[t_lo, t_hi]`` for each solve.
    """

    def __init__(self, score_fn: ScoreFn, sde: SDE):
        self.score_fn = score_fn
        self.sde = sde
        self.clock: Clock = Clock()
        self.t_lo, self.t_hi = 0.0, float(sde.T)
        # state-dependent g: the PF-ODE drift of SDE.reverse, which includes the -1/2 d(g^2)/dx term
        self._reverse = sde.reverse(score_fn, probability_flow=True) if sde.state_dependent_diffusion else None
        self.nfe = 0
        self.t_last: Tensor | None = None
        self.tracker = NonFiniteTracker()

    def field(self, x: Tensor, t: Tensor, tb: Tensor, u: Tensor) -> Callable[[Tensor], Tensor]:
        """:math:`dx/du` as a function of the state alone, at the fixed time ``t`` (a scalar;
        ``tb`` is it expanded to ``(batch,)``) and clock value ``u``; the clock folds :math:`dt/du`
        into the coefficients. ``x`` only supplies the shape for a custom SDE's diffusion."""
        sde, score_fn, clock = self.sde, self.score_fn, self.clock
        if isinstance(sde, LinearSDEBase):
            # the coefficients once, as scalars (every sample shares t)
            a, b = clock.drift_coefficients(sde, u, t)
            b = b.to(x.dtype)
            if a is None:  # no drift term
                return lambda y: -b * call_score(score_fn, y, tb)
            a = a.to(x.dtype)
            return lambda y: a * y - b * call_score(score_fn, y, tb)
        scale = clock.dt_du(u, t).to(x.dtype) if clock.scaled else None
        if self._reverse is not None:
            pf = self._reverse
            return lambda y: pf.drift(y, tb) if scale is None else scale * pf.drift(y, tb)
        # g depends on t only, so g^2 is a constant of the field (computed outside any transform)
        g2 = torch.broadcast_to(sde.diffusion(x, tb), x.shape).square()
        if scale is None:
            return lambda y: sde.drift(y, tb) - 0.5 * g2 * call_score(score_fn, y, tb)
        return lambda y: scale * (sde.drift(y, tb) - 0.5 * g2 * call_score(score_fn, y, tb))

    def evaluate(self, state, t: Tensor, u: Tensor):
        """The right-hand side for ``state`` at time ``t`` (clock value ``u``): here the drift alone
        (subclasses add terms, e.g. the divergence); returns a tensor or a tuple shaped like ``state``."""
        return self.field(state, t, t.expand(state.shape[0]).contiguous(), u)(state)

    def __call__(self, u: Tensor, state):
        x = state[0] if isinstance(state, tuple) else state
        clock = self.clock
        t = clock.t(u) if clock.scaled else u
        # clamp: torchdiffeq's initial step-size probe may look beyond the interval's end
        t = t.to(x.dtype).clamp(self.t_lo, self.t_hi)
        out = self.evaluate(state, t, u)
        # bookkeeping with device tensors only: no host synchronisation inside the solve
        self.nfe += 1
        self.t_last = t
        self.tracker.watch(t, *(out if isinstance(out, tuple) else (out,)))
        return out
