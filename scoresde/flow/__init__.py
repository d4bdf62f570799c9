"""The probability-flow ODE engine, below both the samplers and the likelihood.

* :class:`ProbabilityFlow` -- the PF-ODE right-hand side for any SDE (counts its evaluations,
  tracks where it went non-finite); subclasses add terms (the likelihood's divergence).
* :func:`clock_for`, :class:`Clock`, :class:`NoiseLevelClock` -- the variable the solver steps in.
* :func:`solve` -- one torchdiffeq solve through output times, returning a :class:`FlowSolution`
  (status, time reached, a fix-it message; :meth:`FlowSolution.raise_for_status`).
* :class:`NonFiniteTracker` -- the one device-side record of where a solve first went NaN/inf.

``scoresde.sampling`` (the ``ode`` sampler) and ``scoresde.likelihood`` (log-likelihoods,
``encode``/``decode``) both import this package and never each other.
"""

from .clock import Clock, NoiseLevelClock, clock_for
from .integrate import (
    ADAPTIVE_METHODS,
    FIXED_METHODS,
    METHOD_ORDER,
    REFUSED_METHODS,
    STAGES,
    STATUSES,
    FlowSolution,
    check_adaptive_method,
    check_method,
    reporting_score_failures,
    solve,
)
from .system import ProbabilityFlow, check_flow_sde
from .tracking import NonFiniteTracker

__all__ = [
    "ProbabilityFlow",
    "check_flow_sde",
    "solve",
    "FlowSolution",
    "STATUSES",
    "Clock",
    "NoiseLevelClock",
    "clock_for",
    "NonFiniteTracker",
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "METHOD_ORDER",
    "STAGES",
    "REFUSED_METHODS",
    "check_method",
    "check_adaptive_method",
    "reporting_score_failures",
]
