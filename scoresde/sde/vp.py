r"""Variance-preserving SDEs (VP, with any schedule of :mod:`scoresde.sde.schedules`) and sub-VP.

VP (Song et al. 2021, eq. 11; DDPM in continuous time):

.. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW,\qquad
          \alpha_t = e^{-\frac12 B(t)},\quad \sigma_t^2 = 1 - e^{-B(t)},\quad B(t)=\int_0^t\beta,

so :math:`\alpha_t^2 + \sigma_t^2 = 1`. Sub-VP (eq. 12) keeps the drift and lowers the noise:

.. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW,\qquad
          \sigma_t = 1 - e^{-B(t)}.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice, check_eps, check_float_tensor
from . import schedules as _s
from .base import expand_to
from .linear_base import LinearSDEBase


class VPFamily(LinearSDEBase):
    r"""Abstract: a VP SDE on :math:`[0, 1]` given by a schedule :math:`B(t) = -\log\bar\alpha(t)`
    (:class:`~scoresde.sde.schedules.VPSchedule`), prior :math:`\mathcal N(0, I)`.
    :class:`VPSDE` and :class:`~scoresde.sde.DiscreteVPSDE` are its final classes."""

    variance_preserving = True
    _schedule: _s.VPSchedule

    def _init_vp(self, schedule: _s.VPSchedule, eps: float) -> None:
        self._schedule = schedule
        self.T = 1.0
        self.eps = check_eps(eps, self.T)
        self.prior_std = 1.0

    def integrated_beta(self, t: Tensor | float) -> Tensor:
        r""":math:`B(t) = \int_0^t \beta(s)\,ds = -2\log\alpha_t`."""
        return self._schedule.integrated_beta(self.time(t))

    def beta(self, t: Tensor | float) -> Tensor:
        r""":math:`\beta(t)`."""
        return self._schedule.beta(self.time(t))

    def f(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor | float) -> Tensor:
        return self.beta(t).sqrt()

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        return self._schedule.marginal(self.time(t))

    def log_snr(self, t: Tensor | float) -> Tensor:
        return self._schedule.log_snr(self.time(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        check_float_tensor("lam", lam)
        inverse = self._schedule.t_from_log_snr
        return super().t_from_log_snr(lam) if inverse is None else inverse(lam)

    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""The DDPM chain: :math:`x_t = \sqrt{1-\beta_i}\,x_{t-dt} + \sqrt{\beta_i}\,z` with
        :math:`1-\beta_i = \alpha_t^2/\alpha_{t-dt}^2`: the exact transition of this SDE between
        the two times, so composing the steps reproduces the marginals on the grid."""
        t = self.time(t, like=x)
        prev = (t - dt).clamp_min(0)
        dB = self.integrated_beta(t) - self.integrated_beta(prev)  # beta_i = 1 - e^{-dB}
        F = expand_to(torch.expm1(-0.5 * dB), x) * x
        G = expand_to(torch.sqrt(-torch.expm1(-dB)), x)
        return F, G


class VPSDE(VPFamily):
    r"""Variance-preserving SDE on :math:`[0, 1]` with prior :math:`\mathcal N(0, I)`.

    ``schedule`` names the noise schedule (formulas in :mod:`scoresde.sde.schedules`):

    * ``"linear"`` (default; Song et al., DDPM): :math:`\beta(t) = \beta_{min} + t(\beta_{max}-\beta_{min})`,
      ``beta_min=0.1``, ``beta_max=20``;
    * ``"scaled_linear"`` (latent diffusion): :math:`\sqrt{\beta}` linear from
      :math:`\sqrt{\beta_{min}}` to :math:`\sqrt{\beta_{max}}`, ``beta_min=0.85``, ``beta_max=12``;
    * ``"cosine"`` (Nichol & Dhariwal 2021): ``cosine_s``, truncated at ``cosine_end`` ``c < 1``
      (0.9946, DPM-Solver's: :math:`\lambda_1 \approx -4.8`) because :math:`\beta` diverges at
      :math:`c\,t = 1`;
    * ``"sigmoid"`` (Jabri et al. 2022; Chen 2023): ``sigmoid_start``, ``sigmoid_end``,
      ``sigmoid_tau``, truncated so that :math:`\lambda_1` = ``log_snr_end`` (default -5);
    * ``"shifted_cosine"`` (Hoogeboom et al. 2023): SNR times ``shift``:math:`^2`, truncated at
      ``log_snr_end`` (default :math:`-7.5 + \log\text{shift}`).

    Log-SNR is :math:`\lambda_t = \log(\alpha_t/\sigma_t)` throughout (half of the
    :math:`\log(\alpha^2/\sigma^2)` of VDM and Hoogeboom et al.). Or give your own schedule as a
    torch callable on :math:`[0, 1]` -- ``alpha_bar=`` for :math:`\bar\alpha(t) = \alpha_t^2` or
    ``log_snr=`` for :math:`\lambda(t)` -- and leave
    ``schedule`` unset; :math:`\beta(t)` is then taken by autograd and the inverse log-SNR by
    safeguarded Newton. Such an SDE has no JSON spec (``spec()`` is None): pass it to
    :func:`~scoresde.load_run` yourself. Options that do not belong to the chosen schedule are
    ignored (so older specs, which record all of them, still load).

    Default ``eps = 1e-5`` (Song et al.'s likelihood cut-off; the paper's samplers used 1e-3 for VP,
    pass ``eps=1e-3`` to match).
    """

    def __init__(
        self,
        beta_min: float | None = None,
        beta_max: float | None = None,
        *,
        schedule: str | None = None,
        cosine_s: float = 0.008,
        cosine_end: float = 0.9946,
        sigmoid_start: float = -3.0,
        sigmoid_end: float = 3.0,
        sigmoid_tau: float = 1.0,
        shift: float = 1.0,
        log_snr_end: float | None = None,
        alpha_bar: Callable[[Tensor], Tensor] | None = None,
        log_snr: Callable[[Tensor], Tensor] | None = None,
        eps: float = 1e-5,
    ):
        if alpha_bar is not None or log_snr is not None:
            if alpha_bar is not None and log_snr is not None:
                raise ArgumentError("give alpha_bar or log_snr, not both")
            if schedule is not None:
                raise ArgumentError(f"give schedule={schedule!r} or a callable alpha_bar / log_snr, not both")
            sched: _s.VPSchedule = _s.AlphaBar(alpha_bar) if alpha_bar is not None else _s.LogSNR(log_snr)
        else:
            schedule = check_choice("schedule", "linear" if schedule is None else schedule, _s.SCHEDULES)
            betas = {k: v for k, v in (("beta_min", beta_min), ("beta_max", beta_max)) if v is not None}
            if schedule == "linear":
                sched = _s.Linear(**betas)
            elif schedule == "scaled_linear":
                sched = _s.ScaledLinear(**betas)
            elif schedule == "cosine":
                sched = _s.Cosine(cosine_s, cosine_end)
            elif schedule == "sigmoid":
                sched = _s.Sigmoid(sigmoid_start, sigmoid_end, sigmoid_tau, log_snr_end)
            else:
                sched = _s.ShiftedCosine(shift, log_snr_end)
        self.schedule = sched.name
        options = sched.spec()
        if sched.name in ("linear", "cosine"):
            # the options every run recorded before the other schedules existed, used or not:
            # a resumed run compares its recorded spec with this one key by key
            lin = sched if sched.name == "linear" else _s.Linear(**betas)
            cos = sched if sched.name == "cosine" else _s.Cosine(cosine_s, cosine_end)
            options = {"beta_min": lin.beta_min, "beta_max": lin.beta_max, "cosine_s": cos.cosine_s,
                       "cosine_end": cos.cosine_end}
        self._options = options
        for name, value in (options or {}).items():  # the schedule's parameters: sde.beta_min, ...
            setattr(self, name, value)
        self._init_vp(sched, eps)

    def spec(self) -> dict | None:
        """The constructor's arguments as JSON values, so that ``VPSDE(**sde.spec())`` is the same
        SDE; None for a user's callable schedule (which no file can hold)."""
        if self._options is None:
            return None
        if self.schedule in ("linear", "cosine"):  # the recorded layout, key order included
            o = self._options
            return {"beta_min": o["beta_min"], "beta_max": o["beta_max"], "schedule": self.schedule,
                    "cosine_s": o["cosine_s"], "cosine_end": o["cosine_end"], "eps": self.eps}
        return {"schedule": self.schedule, **self._options, "eps": self.eps}

    def __repr__(self) -> str:
        return f"VPSDE({self._schedule!r})"


class SubVPSDE(LinearSDEBase):
    r"""Sub-VP SDE (Song et al. 2021, eq. 12) on :math:`[0, 1]`, prior :math:`\mathcal N(0, I)`.

    :math:`\alpha_t = e^{-B/2}`, :math:`\sigma_t = 1 - e^{-B}`, :math:`g(t)^2 = \beta(t)(1-e^{-2B(t)})`
    with the linear :math:`\beta(t)`; its variance is below VP's at every t.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, eps: float = 1e-5):
        self.beta_min, self.beta_max = _s.check_betas(beta_min, beta_max)
        self.T = 1.0
        self.eps = check_eps(eps, self.T)
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
        return _s.t_from_linear_integrated_beta(-2 * alpha.log(), self.beta_min, self.beta_max)

    def spec(self) -> dict:
        """The constructor's arguments as JSON values: ``SubVPSDE(**sde.spec())`` is the same SDE."""
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "eps": self.eps}

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"
