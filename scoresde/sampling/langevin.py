r"""Samplers that use Langevin dynamics: predictor-corrector and annealed Langevin.

Langevin dynamics :math:`x \leftarrow x + \epsilon\,\nabla\log p(x) + \sqrt{2\epsilon}\,z` leaves
:math:`p` invariant as :math:`\epsilon \to 0`. At each noise level it pulls the samples towards
:math:`p_t`, correcting the error a predictor step made.

**Choosing ``snr``** (the corrector's signal-to-noise ratio :math:`r`): the step is set so that the
score move is :math:`r` times the injected noise. With a near-Gaussian :math:`p_t` of scale
:math:`\varsigma`, :math:`\lVert s\rVert^2 \approx D/\varsigma^2`, so :math:`\epsilon \approx 2 r^2 \varsigma^2`:
``snr`` is the step length as a fraction of the local spread, and Langevin's discretisation bias
(a relative widening of order :math:`r^2`) grows with it. Song et al. used 0.16 for VE on
CIFAR-10, where :math:`\lVert s\rVert` barely varies between samples. Per sample, in low
dimensions, :math:`\lVert s\rVert` varies with the position (samples near a mode's centre get
longer steps), which widens the modes: on the 2-D ring, snr 0.1 over-disperses by 5% where
0.05 is within 1%. The default 0.05 holds up from 2 to 16 dimensions and beyond; raise it
(0.1-0.2) for high-dimensional data, lower it if samples come out too wide.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import ArgumentError, check_int, check_nonneg
from ..sde import LinearSDE
from .base import Sampler, SolveContext, batch_time, register
from .sde_solvers import Ancestral, EulerMaruyama, ReverseDiffusion, langevin_alpha, langevin_step

_PREDICTORS = {
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral": Ancestral,
    "none": None,
}
_CORRECTORS = ("langevin", "none")


@register
class PredictorCorrector(Sampler):
    r"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-5).

    For each step :math:`t_i \to t_{i+1}`: one predictor step (``euler_maruyama``,
    ``reverse_diffusion``, ``ancestral`` or ``none``), then ``corrector_steps`` Langevin steps at
    :math:`t_{i+1}` with the per-sample step size of :func:`~scoresde.sampling.sde_solvers.langevin_step`
    (``corrector="langevin"``) or none. NFE per step: 1 (predictor) + ``corrector_steps``.

    Args:
        predictor: the predictor's name.
        corrector: ``"langevin"`` or ``"none"``.
        snr: the corrector's signal-to-noise ratio (see the module doc for how to choose it).
        corrector_steps: Langevin steps per time step.
    """

    name = "pc"
    stochastic = True

    def __init__(
        self,
        predictor: str = "reverse_diffusion",
        corrector: str = "langevin",
        snr: float = 0.05,
        corrector_steps: int = 1,
    ):
        if predictor not in _PREDICTORS:
            raise ArgumentError(f"predictor must be one of {sorted(_PREDICTORS)}, got {predictor!r}")
        if corrector not in _CORRECTORS:
            raise ArgumentError(f"corrector must be one of {_CORRECTORS}, got {corrector!r}")
        if predictor == "none" and corrector == "none":
            raise ArgumentError("predictor and corrector cannot both be 'none'")
        self.predictor = predictor
        self.corrector = corrector
        self.snr = check_nonneg("snr", snr)
        self.corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
        self._pred = _PREDICTORS[predictor]() if _PREDICTORS[predictor] is not None else None
        self.order = self._pred.order if (self._pred is not None and corrector == "none") else None

    @property
    def needs_linear(self) -> bool:  # type: ignore[override]
        return self._pred is not None and self._pred.needs_linear

    def options(self) -> dict:
        return dict(predictor=self.predictor, corrector=self.corrector, snr=self.snr,
                    corrector_steps=self.corrector_steps)

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        step_done = ctx.step_done
        for i in range(len(times) - 1):
            t, s = times[i], times[i + 1]
            if self._pred is not None:
                ctx.step_done = _identity  # the predictor's own step_done: applied once below
                try:
                    x = self._pred.solve(ctx, x, times[i : i + 2])
                finally:
                    ctx.step_done = step_done
            if self.corrector == "langevin":
                alpha = langevin_alpha(ctx.sde, t, s)
                for _ in range(self.corrector_steps):
                    x = langevin_step(ctx, x, s, self.snr, alpha)
            x = ctx.step_done(x, s)
        return x


def _identity(x: Tensor, t: Tensor) -> Tensor:
    return x


@register
class AnnealedLangevin(Sampler):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) over the SDE's noise levels.

    For each level :math:`t_1 > \dots > t_N = \varepsilon` of the grid, ``n_steps_each`` steps of
    Langevin dynamics on :math:`p_{t_i}` with step :math:`\epsilon_i = c\,\sigma_{t_i}^2`
    (``step_size`` :math:`c`; NCSN's :math:`\epsilon\,\sigma_i^2/\sigma_L^2` with :math:`c = \epsilon/\sigma_L^2`):

    .. math:: x \leftarrow x + \epsilon_i\, s_\theta(x, t_i) + \sqrt{2\epsilon_i}\,z.

    (NCSN writes the step as :math:`\tfrac{\alpha_i}2\nabla\log p + \sqrt{\alpha_i}z` with :math:`\alpha_i = 2\epsilon_i`.)
    Needs a :class:`~scoresde.sde.LinearSDE` for :math:`\sigma_t`. NFE = steps x ``n_steps_each``.
    """

    name = "annealed_langevin"
    stochastic = True
    needs_linear = True
    default_steps = 400

    def __init__(self, n_steps_each: int = 5, step_size: float = 0.1):
        self.n_steps_each = check_int("n_steps_each", n_steps_each)
        self.step_size = check_nonneg("step_size", step_size)

    def options(self) -> dict:
        return dict(n_steps_each=self.n_steps_each, step_size=self.step_size)

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        sde: LinearSDE = ctx.sde
        _, sigmas = sde.marginal(times)
        for i in range(1, len(times)):
            eps = self.step_size * sigmas[i].square()
            t = batch_time(times[i], x)
            for _ in range(self.n_steps_each):
                x = x + eps * ctx.score(x, t) + (2 * eps).sqrt() * ctx.noise(x)
            x = ctx.step_done(x, times[i])
        return x
