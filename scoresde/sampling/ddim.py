r"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models") with its noise parameter
:math:`\eta`, for any linear SDE.

From :math:`t` to :math:`t' < t` with the model's predictions
:math:`\hat x_0 = (x_t + \sigma_t^2 s_\theta)/\alpha_t` and :math:`\hat\epsilon = -\sigma_t s_\theta`,

.. math:: x_{t'} = \alpha_{t'}\hat x_0 + \sqrt{\sigma_{t'}^2 - s^2}\;\hat\epsilon + s\,z,\qquad
          s = \eta\,\sigma_{t'}\sqrt{1 - e^{-2h}},\quad h = \lambda_{t'} - \lambda_t,\quad z\sim\mathcal N(0, I),

(Song et al., eq. 12 and 16, written with the marginals :math:`x_t = \alpha_t x_0 + \sigma_t n` of any linear SDE:
:math:`\sigma_{t'}^2(1-e^{-2h})` is the variance of the forward posterior :math:`q(x_{t'}\mid x_t, x_0)`; for VP it is
:math:`\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}(1-\bar\alpha_t/\bar\alpha_{t'})`).

* :math:`\eta = 0`: deterministic, :math:`x_{t'} = \frac{\sigma_{t'}}{\sigma_t}x_t + \alpha_{t'}(1-e^{-h})\hat x_0`, the
  first-order exponential integrator of the probability-flow ODE (``dpm_solver`` of order 1); ODE order 1.
* :math:`\eta = 1`: the posterior :math:`q(x_{t'}\mid x_t, \hat x_0)` itself (DDPM's ancestral step on the grid).
* :math:`0 < \eta \le 1`: as the steps shrink, the reverse process
  :math:`dx = [f x - \tfrac{1+\eta^2}{2}g^2\nabla\log p_t]dt + \eta\,g\,d\bar W`, which keeps the marginals; weak
  order 1 (measured on the exact Gaussian law).

:math:`\eta` must lie in [0, 1] (above 1, :math:`s > \sigma_{t'}` on long steps). Coefficients are computed
once, in float64 on the host, from the grid.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..errors import check_range
from ..sde import SDE
from .base import FEW_STEP_END_LEVEL, LINEAR, MARGINALS, Sampler
from .registry import register


@register
class DDIM(Sampler):
    r"""DDIM with noise :math:`\eta \in [0, 1]` (default 0: deterministic), for linear SDEs.

    Args:
        eta: :math:`\eta`; 0 is the DDIM ODE step, 1 DDPM's posterior step.

    NFE = steps. Default: 50 steps, uniform in time (as DDIM's evenly spaced timesteps).
    """

    name = "ddim"
    requires = (LINEAR, MARGINALS)
    default_steps = 50
    default_grid = "uniform"
    default_end_level = FEW_STEP_END_LEVEL

    def __init__(self, eta: float = 0.0):
        self.eta = check_range("eta", eta, 0.0, 1.0, low_closed=True, high_closed=True)

    def options(self) -> dict:
        return dict(eta=self.eta)

    def is_stochastic(self) -> bool:
        return self.eta > 0

    def order(self, sde: SDE) -> float | None:
        return None if self.eta > 0 else 1.0

    def weak_order(self, sde: SDE) -> float:
        return 1.0

    def init(self, ctx, x):
        a, s, lam = ctx.host_marginals
        coefs = []
        for i in range(ctx.n_steps):
            h = lam[i + 1] - lam[i]
            std = self.eta * s[i + 1] * math.sqrt(-math.expm1(-2 * h))
            direction = math.sqrt(max(s[i + 1] ** 2 - std**2, 0.0))  # the weight of eps_hat
            # x' = a' x0 + direction (x - a x0)/s + std z = (direction/s) x + (a' - direction a/s) x0 + std z
            coefs.append((direction / s[i], a[i + 1] - direction * a[i] / s[i], std))
        return coefs

    def step(self, ctx, i: int, x: Tensor, coefs):
        x0 = ctx.predict(x, i)
        c_x, c_0, std = coefs[i]
        x_next = c_x * x + c_0 * x0
        if self.eta > 0:
            x_next = x_next + std * ctx.noise(x)
        return x_next, coefs
