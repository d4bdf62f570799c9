r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) over the SDE's noise levels.

For each level :math:`t_1 > \dots > t_N = \varepsilon` of the grid, ``n_steps_each`` steps of
Langevin dynamics on :math:`p_{t_i}` with step :math:`\epsilon_i = c\,\sigma_{t_i}^2`
(``step_size`` :math:`c`; NCSN's :math:`\epsilon\,\sigma_i^2/\sigma_L^2` with :math:`c = \epsilon/\sigma_L^2`):

.. math:: x \leftarrow x + \epsilon_i\, s_\theta(x, t_i) + \sqrt{2\epsilon_i}\,z.

(NCSN writes the step as :math:`\tfrac{\alpha_i}2\nabla\log p + \sqrt{\alpha_i}z` with :math:`\alpha_i = 2\epsilon_i`.)
"""

from __future__ import annotations

import math

from torch import Tensor

from ..errors import check_int, check_positive
from ..sde import SDE
from .base import MARGINALS, Sampler, batch_time
from .coefficients import combine
from .registry import register


@register
class AnnealedLangevin(Sampler):
    """Annealed Langevin dynamics; needs closed-form marginals for :math:`\\sigma_t`.
    NFE = steps x ``n_steps_each``. No order: Langevin's bias at each level does not vanish with
    more levels.

    Args:
        n_steps_each: Langevin steps per noise level.
        step_size: :math:`c` in :math:`\\epsilon_i = c\\,\\sigma_{t_i}^2`.
    """

    name = "annealed_langevin"
    requires = (MARGINALS,)
    default_steps = 400

    def __init__(self, n_steps_each: int = 5, step_size: float = 0.1):
        self.n_steps_each = check_int("n_steps_each", n_steps_each)
        self.step_size = check_positive("step_size", step_size)

    def options(self) -> dict:
        return dict(n_steps_each=self.n_steps_each, step_size=self.step_size)

    def is_stochastic(self) -> bool:
        return True

    def evaluations(self, steps: int, sde: SDE) -> int:
        return steps * self.n_steps_each

    def init(self, ctx, x):
        _, s, _ = ctx.host_marginals
        return [self.step_size * si**2 for si in s[1:]]  # epsilon_i at t_{i+1}, on the host

    def step(self, ctx, i: int, x: Tensor, sizes):
        eps = sizes[i]
        t = batch_time(ctx.times[i + 1], x)
        for _ in range(self.n_steps_each):
            x = combine(1.0, x, [eps, math.sqrt(2 * eps)], [ctx.score(x, t), ctx.noise(x)])
        return x, sizes
