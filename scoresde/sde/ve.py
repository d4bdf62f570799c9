r"""The variance-exploding SDE (SMLD / NCSN in continuous time), in closed form.

.. math:: dx = \sqrt{\frac{d\sigma(t)^2}{dt}}\,dW,\qquad
          \sigma(t) = \sigma_{min}\Big(\frac{\sigma_{max}}{\sigma_{min}}\Big)^t,\qquad
          g(t)^2 = 2\sigma(t)^2\log\frac{\sigma_{max}}{\sigma_{min}}.

As in Song et al. 2021 the data count as already perturbed by :math:`\sigma_{min}` at
:math:`t = 0`, so :math:`x_t = x_0 + \sigma(t)\,n` (:math:`\alpha_t = 1`), and the prior is
:math:`\mathcal N(0, \sigma_{max}^2 I)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ArgumentError, check_eps, check_float_tensor, check_positive
from .base import expand_to
from .linear_base import LinearSDEBase


class VESDE(LinearSDEBase):
    r"""Variance-exploding SDE with geometric noise levels on :math:`[0, 1]`.

    Choose ``sigma_max`` about the largest distance between training points (Song & Ermon
    2020, technique 1) and ``sigma_min`` below the data's finest scale. Default ``eps = 1e-5``.
    ``sigma0`` is the std at ``t = 0``, :math:`\sigma_{min}`; ``alpha_is_one`` is True.
    """

    alpha_is_one = True

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, eps: float = 1e-5):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_min >= self.sigma_max:
            raise ArgumentError(
                f"sigma_min must be smaller than sigma_max={self.sigma_max:g}, got {sigma_min!r}"
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.T = 1.0
        self.eps = check_eps(eps, self.T)
        self.sigma0 = self.sigma_min
        self.prior_std = self.sigma_max

    def sigma(self, t: Tensor | float) -> Tensor:
        r""":math:`\sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t`."""
        t = self.time(t)
        return self.sigma_min * torch.exp(self._log_ratio * t)

    def f(self, t: Tensor | float) -> Tensor:
        return torch.zeros_like(self.time(t))

    def g(self, t: Tensor | float) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        sigma = self.sigma(t)
        return torch.ones_like(sigma), sigma

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -self.sigma(t).log()

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        check_float_tensor("lam", lam)
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""The SMLD chain: :math:`x_t = x_{t-dt} + \sqrt{\sigma(t)^2 - \sigma(t-dt)^2}\,z`
        (Song et al. 2021, App. B), exact for this SDE's marginals on the grid."""
        t = self.time(t, like=x)
        prev = (t - dt).clamp_min(0)
        G = torch.sqrt(self.sigma(t).square() - self.sigma(prev).square())
        return torch.zeros_like(x), expand_to(G, x)

    def spec(self) -> dict:
        """The constructor's arguments as JSON values: ``VESDE(**sde.spec())`` is the same SDE."""
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "eps": self.eps}

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"
