r"""Variance-preserving SDEs (VP, with linear or cosine schedule) and sub-VP, in closed form.

VP (Song et al. 2021, eq. 11; DDPM in continuous time):

.. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW,\qquad
          \alpha_t = e^{-\frac12 B(t)},\quad \sigma_t^2 = 1 - e^{-B(t)},\quad B(t)=\int_0^t\beta,

so :math:`\alpha_t^2 + \sigma_t^2 = 1`. Sub-VP (eq. 12) keeps the drift and lowers the noise:

.. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW,\qquad
          \sigma_t = 1 - e^{-B(t)}.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ArgumentError, check_float_tensor, check_positive
from .base import expand_to
from .linear import LinearSDE


def _check_betas(beta_min: float, beta_max: float) -> tuple[float, float]:
    beta_min = check_positive("beta_min", beta_min)
    beta_max = check_positive("beta_max", beta_max)
    if beta_max < beta_min:
        raise ArgumentError(f"beta_max must be >= beta_min={beta_min:g}, got {beta_max!r}")
    return beta_min, beta_max


def _t_from_integrated_beta(B: Tensor, beta_min: float, beta_max: float) -> Tensor:
    """Solve :math:`B(t) = \\beta_{min} t + \\tfrac12(\\beta_{max}-\\beta_{min}) t^2` for t."""
    slope = beta_max - beta_min
    return 2 * B / (beta_min + torch.sqrt(beta_min**2 + 2 * slope * B))


class VPSDE(LinearSDE):
    r"""Variance-preserving SDE on :math:`[0, 1]` with prior :math:`\mathcal N(0, I)`.

    ``schedule="linear"`` (Song et al.; DDPM): :math:`\beta(t) = \beta_{min} + t(\beta_{max}-\beta_{min})`.

    ``schedule="cosine"`` (Nichol & Dhariwal 2021 in continuous time):
    :math:`\alpha_t = \cos\phi(t)/\cos\phi(0)`, :math:`\phi(t) = \frac\pi2\,\frac{c\,t + s}{1+s}`,
    :math:`\beta(t) = -2\,d\log\alpha_t/dt = \frac{\pi c}{1+s}\tan\phi(t)`. The cosine schedule
    reaches :math:`\alpha=0` (and :math:`\beta=\infty`) at :math:`c\,t = 1`, so time is scaled
    by ``cosine_end`` ``c = 0.9946``, the end point DPM-Solver uses; then
    :math:`\log(\alpha_1/\sigma_1) \approx -4.8`, close to the linear schedule's -5.0.
    ``beta_min``/``beta_max`` are ignored by the cosine schedule.

    Default ``eps = 1e-5`` (Song et al.'s likelihood cut-off; the paper's samplers used 1e-3 for VP,
    pass ``eps=1e-3`` to match).
    """

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        *,
        schedule: str = "linear",
        cosine_s: float = 0.008,
        cosine_end: float = 0.9946,
        eps: float = 1e-5,
    ):
        if schedule not in ("linear", "cosine"):
            raise ArgumentError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        self.schedule = schedule
        self.beta_min, self.beta_max = _check_betas(beta_min, beta_max)
        self.cosine_s = check_positive("cosine_s", cosine_s)
        self.cosine_end = check_positive("cosine_end", cosine_end)
        if self.cosine_end >= 1:
            raise ArgumentError(f"cosine_end must lie in (0, 1), got {cosine_end!r}")
        self._set_times(1.0, eps)
        self.prior_std = 1.0
        s = self.cosine_s
        self._phi0 = 0.5 * math.pi * s / (1 + s)
        self._dphi = 0.5 * math.pi * self.cosine_end / (1 + s)

    def _phi(self, t: Tensor) -> Tensor:
        return self._phi0 + self._dphi * t

    def integrated_beta(self, t: Tensor | float) -> Tensor:
        r""":math:`B(t) = \int_0^t \beta(s)\,ds = -2\log\alpha_t`."""
        t = self.time(t)
        if self.schedule == "linear":
            return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t.square()
        return -2 * (torch.cos(self._phi(t)).log() - math.log(math.cos(self._phi0)))

    def beta(self, t: Tensor | float) -> Tensor:
        r""":math:`\beta(t)`."""
        t = self.time(t)
        if self.schedule == "linear":
            return self.beta_min + (self.beta_max - self.beta_min) * t
        return 2 * self._dphi * torch.tan(self._phi(t))

    def f(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor | float) -> Tensor:
        return self.beta(t).sqrt()

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = self.time(t)
        if self.schedule == "linear":
            B = self.integrated_beta(t)
            return torch.exp(-0.5 * B), torch.sqrt(-torch.expm1(-B))
        phi = self._phi(t)
        cos0 = math.cos(self._phi0)
        # 1 - cos^2(phi)/cos^2(phi0) = sin(phi - phi0) sin(phi + phi0) / cos^2(phi0), no cancellation
        var = torch.sin(phi - self._phi0) * torch.sin(phi + self._phi0) / cos0**2
        return torch.cos(phi) / cos0, var.sqrt()

    def log_snr(self, t: Tensor | float) -> Tensor:
        t = self.time(t)
        if self.schedule == "linear":
            B = self.integrated_beta(t)
            return -0.5 * B - 0.5 * torch.log(-torch.expm1(-B))
        return super().log_snr(t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        check_float_tensor("lam", lam)
        if self.schedule == "linear":
            # SNR = 1 / (e^B - 1)  =>  B = log(1 + e^{-2 lam})
            B = torch.nn.functional.softplus(-2 * lam)
            return _t_from_integrated_beta(B, self.beta_min, self.beta_max)
        # alpha^2 = sigmoid(2 lam)  =>  cos(phi) = cos(phi0) sqrt(sigmoid(2 lam))
        phi = torch.arccos(math.cos(self._phi0) * torch.sigmoid(2 * lam).sqrt())
        return (phi - self._phi0) / self._dphi

    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""The DDPM chain: :math:`x_t = \sqrt{1-\beta_i}\,x_{t-dt} + \sqrt{\beta_i}\,z` with
        :math:`1-\beta_i = \alpha_t^2/\alpha_{t-dt}^2`, exact for this SDE's marginals on the grid."""
        t = self.time(t, like=x)
        prev = (t - dt).clamp_min(0)
        dB = self.integrated_beta(t) - self.integrated_beta(prev)  # beta_i = 1 - e^{-dB}
        F = expand_to(torch.expm1(-0.5 * dB), x) * x
        G = expand_to(torch.sqrt(-torch.expm1(-dB)), x)
        return F, G

    def spec(self) -> dict:
        """The constructor's arguments as JSON values: ``VPSDE(**sde.spec())`` is the same SDE."""
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "schedule": self.schedule,
                "cosine_s": self.cosine_s, "cosine_end": self.cosine_end, "eps": self.eps}

    def __repr__(self) -> str:
        if self.schedule == "cosine":
            return f"VPSDE(schedule='cosine', cosine_s={self.cosine_s:g}, cosine_end={self.cosine_end:g})"
        return f"VPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class SubVPSDE(LinearSDE):
    r"""Sub-VP SDE (Song et al. 2021, eq. 12) on :math:`[0, 1]`, prior :math:`\mathcal N(0, I)`.

    :math:`\alpha_t = e^{-B/2}`, :math:`\sigma_t = 1 - e^{-B}`, :math:`g(t)^2 = \beta(t)(1-e^{-2B(t)})`
    with the linear :math:`\beta(t)`; its variance is below VP's at every t.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, eps: float = 1e-5):
        self.beta_min, self.beta_max = _check_betas(beta_min, beta_max)
        self._set_times(1.0, eps)
        self.prior_std = 1.0

    def integrated_beta(self, t: Tensor | float) -> Tensor:
        t = self.time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t.square()

    def beta(self, t: Tensor | float) -> Tensor:
        t = self.time(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def f(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t)))

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), -torch.expm1(-B)

    def log_snr(self, t: Tensor | float) -> Tensor:
        B = self.integrated_beta(t)
        return -0.5 * B - torch.log(-torch.expm1(-B))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        check_float_tensor("lam", lam)
        # alpha = q (1 - alpha^2) with q = e^lam  =>  alpha = 2q / (1 + sqrt(1 + 4 q^2))
        q = lam.exp()
        alpha = 2 * q / (1 + torch.sqrt(1 + 4 * q.square()))
        return _t_from_integrated_beta(-2 * alpha.log(), self.beta_min, self.beta_max)

    def spec(self) -> dict:
        """The constructor's arguments as JSON values: ``SubVPSDE(**sde.spec())`` is the same SDE."""
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "eps": self.eps}

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"
