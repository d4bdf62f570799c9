"""Score evaluations from the samplers' declarations, for comparisons at equal cost.

A sampler declares its evaluations for a number of steps (:meth:`Sampler.evaluations`); the
driver adds one for the final denoising step on a linear SDE. :func:`expected_nfe` is that sum,
exactly what :func:`~scoresde.sample` reports as ``nfe``, and :func:`steps_for_nfe` inverts it.
"""

from __future__ import annotations

from ..errors import ArgumentError, check_bool, check_int
from ..sde import SDE, LinearSDEBase
from .base import Sampler


def expected_nfe(sampler: Sampler, sde: SDE, steps: int, *, denoise: bool = True) -> int | None:
    """The score evaluations ``sample(..., sampler=sampler, steps=steps, denoise=denoise)`` makes on
    ``sde`` (None when not known in advance: an adaptive solve)."""
    steps = check_int("steps", steps)
    n = sampler.evaluations(steps, sde)
    if n is None:
        return None
    return n + int(check_bool("denoise", denoise) and isinstance(sde, LinearSDEBase))


def steps_for_nfe(sampler: Sampler, sde: SDE, nfe: int, *, denoise: bool = True) -> int:
    """The most steps whose :func:`expected_nfe` does not exceed the budget ``nfe``; 1 when even one
    step costs more (then the run spends more than the budget, and says so in its ``nfe``)."""
    nfe = check_int("nfe", nfe)
    if expected_nfe(sampler, sde, 1, denoise=denoise) is None:
        raise ArgumentError(f"sampler {sampler!r} cannot be held to a budget of evaluations (an adaptive solve); "
                            "give it a fixed-step method")
    lo, hi = 1, 2
    while expected_nfe(sampler, sde, hi, denoise=denoise) <= nfe:  # evaluations grow with the steps
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if expected_nfe(sampler, sde, mid, denoise=denoise) <= nfe else (lo, mid)
    return lo
