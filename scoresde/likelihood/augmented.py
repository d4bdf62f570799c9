r"""The PF-ODE augmented with its divergence, for the instantaneous change of variables.

The state is :math:`(x_t, \int_\varepsilon^t \nabla\!\cdot v(x_s, s)\,ds)` and its right-hand side
:math:`(v, \nabla\!\cdot v)\,dt/du` (see :mod:`scoresde.likelihood.core`). The drift is
:class:`scoresde.flow.ProbabilityFlow`'s; the divergence is exact or Skilling-Hutchinson
(:mod:`scoresde.likelihood.divergence`).
"""

from __future__ import annotations

from torch import Tensor

from ..flow import ProbabilityFlow
from ..sde import SDE, ScoreFn
from .divergence import Batching, exact_divergence, hutchinson_divergence, hutchpp_divergence

TRACE_TYPES = ("exact", "hutchinson", "hutch++")

#: the estimators whose probes are drawn per solve (and whose spread gives standard errors)
STOCHASTIC_TRACES = ("hutchinson", "hutch++")


class AugmentedFlow(ProbabilityFlow):
    r"""The right-hand side :math:`(u, (x, \ell)) \mapsto (v, \nabla\!\cdot v)\,dt/du`.

    Args:
        score_fn: ``score_fn(x, t)`` with ``t`` of shape ``(batch,)``.
        sde: the forward SDE; its diffusion must not depend on ``x``.
        trace: ``"exact"``, ``"hutchinson"`` or ``"hutch++"``.
        probes: for Hutchinson, the fixed probes ``(n, batch, *S)`` used for the whole solve (for
            Hutch++, the pair ``(sketch, probes)``, both fixed for the solve). With
            ``n >= 2`` the divergence part of the state is one integral per probe, shape
            ``(batch, n)`` (their spread is each sample's standard error); with one, ``(batch,)``.
        chunk_size: basis directions (exact) or probes (Hutchinson) per vmap chunk.

    ``batching`` (a :class:`~scoresde.likelihood.divergence.Batching`) decides at the first
    evaluation whether the vector-Jacobian products go through vmap or through the replicated
    batch (networks vmap cannot batch, e.g. diffusers UNets), once for the whole solve.
    """

    def __init__(self, score_fn: ScoreFn, sde: SDE, *, trace: str = "exact", probes: Tensor | None = None,
                 chunk_size: int | None = None):
        super().__init__(score_fn, sde)
        self.trace = trace
        self.probes = probes
        self.chunk_size = chunk_size
        self.batching = Batching("auto")

    def evaluate(self, state, t: Tensor, u: Tensor):
        x = state[0]
        v = self.field(x, t, t.expand(x.shape[0]).contiguous(), u)

        def stacked(y: Tensor) -> Tensor:  # the field on k stacked copies, for the replicated divergence
            return self.field(y, t, t.expand(y.shape[0]).contiguous(), u)(y)

        kw = dict(batching=self.batching, stacked=stacked)
        if self.trace == "exact":
            return exact_divergence(v, x, self.chunk_size, **kw)
        if self.trace == "hutch++":
            return hutchpp_divergence(v, x, *self.probes, per_probe=self.per_probe, **kw)
        return hutchinson_divergence(v, x, self.probes, self.chunk_size, per_probe=self.per_probe, **kw)

    @property
    def per_probe(self) -> bool:
        """Whether the state keeps one divergence integral per (residual) probe: two or more of them."""
        if self.trace == "hutch++":
            return self.probes[1].shape[0] > 1
        return self.trace == "hutchinson" and self.probes is not None and self.probes.shape[0] > 1
