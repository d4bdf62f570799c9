r"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-5): a composition of steps.

For each step :math:`t_i \to t_{i+1}`: one step of a predictor sampler (any stepping sampler of
the registry that discretises the reverse SDE: ``euler_maruyama``, ``reverse_diffusion``,
``ancestral``; or ``none``), then ``corrector_steps`` Langevin steps at :math:`t_{i+1}`
(:func:`~scoresde.sampling.langevin.langevin_step`; see :mod:`scoresde.sampling.langevin` for the
step size and for how to choose ``snr``). The predictor keeps its own state; the driver sees one
step.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import ArgumentError, check_choice, check_int, check_nonneg
from ..sde import SDE, LinearSDEBase
from .base import Sampler
from .langevin import langevin_sizes, langevin_step
from .registry import get_sampler, register

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
CORRECTORS = ("langevin", "none")


@register
class PredictorCorrector(Sampler):
    r"""Predictor-corrector sampling. NFE per step: the predictor's (1) + ``corrector_steps``.

    Args:
        predictor: the predictor's name (one of ``PREDICTORS``).
        corrector: ``"langevin"`` or ``"none"``.
        snr: the corrector's signal-to-noise ratio (see :mod:`scoresde.sampling.langevin`).
        corrector_steps: Langevin steps per time step.

    Serves what its predictor serves. Its orders are the predictor's without a corrector; a
    Langevin corrector's bias (about ``snr**2``) does not vanish with more steps, so it has none.
    """

    name = "pc"

    def __init__(self, predictor: str = "reverse_diffusion", corrector: str = "langevin", snr: float = 0.05,
                 corrector_steps: int = 1):
        check_choice("predictor", predictor, PREDICTORS)
        check_choice("corrector", corrector, CORRECTORS)
        if predictor == "none" and corrector == "none":
            raise ArgumentError("predictor and corrector cannot both be 'none'")
        self.predictor, self.corrector = predictor, corrector
        self.snr = check_nonneg("snr", snr)
        self.corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
        self._pred = None if predictor == "none" else get_sampler(predictor)
        self._langevin = self.corrector_steps if corrector == "langevin" else 0

    def options(self) -> dict:
        return dict(predictor=self.predictor, corrector=self.corrector, snr=self.snr,
                    corrector_steps=self.corrector_steps)

    def requirements(self):
        return () if self._pred is None else self._pred.requirements()

    def is_stochastic(self) -> bool:
        return True

    def order(self, sde: SDE) -> float | None:
        return self._pred.order(sde) if self._pred is not None and self.corrector == "none" else None

    def weak_order(self, sde: SDE) -> float | None:
        return self._pred.weak_order(sde) if self._pred is not None and self.corrector == "none" else None

    def evaluations(self, steps: int, sde: SDE) -> int:
        pred = 0 if self._pred is None else self._pred.evaluations(1, sde)
        return steps * (pred + self._langevin)

    def init(self, ctx, x):
        if self._langevin and ctx.per_sample_seeds and not isinstance(ctx.sde, LinearSDEBase):
            raise ArgumentError(
                f"sampler 'pc' cannot use per-sample seeds on {type(ctx.sde).__name__}: without closed-form "
                "marginals its Langevin step is set from the batch-mean score norm, so a sample would depend "
                "on its batch-mates; give one seed, or corrector='none', or use a LinearSDE"
            )
        sizes = langevin_sizes(ctx, self.snr) if self._langevin else None
        return None if self._pred is None else self._pred.init(ctx, x), sizes

    def step(self, ctx, i: int, x: Tensor, state):
        pred_state, sizes = state
        if self._pred is not None:
            x, pred_state = self._pred.step(ctx, i, x, pred_state)
        for _ in range(self._langevin):
            x = langevin_step(ctx, x, i, self.snr, None if sizes is None else sizes[i])
        return x, (pred_state, sizes)
