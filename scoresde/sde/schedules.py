r"""Noise schedules of the variance-preserving SDE, each in closed form where one exists.

A VP schedule is the signal level :math:`\bar\alpha(t) = \alpha_t^2 = e^{-B(t)}` on :math:`[0, 1]`,
:math:`B(t) = \int_0^t \beta(s)\,ds`, decreasing from (about) 1 to a small positive value; the SDE
is :math:`dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW` with :math:`\sigma_t^2 = 1 - \bar\alpha(t)`.
Log-SNR here is scoresde's :math:`\lambda_t = \log(\alpha_t/\sigma_t) = \tfrac12\log\frac{\bar\alpha}{1-\bar\alpha}`
(DPM-Solver's), half the :math:`\log(\alpha_t^2/\sigma_t^2)` that VDM, Chen and Hoogeboom et al.
call log-SNR. Built in (:math:`\lambda_1` and :math:`\beta(1)` at the defaults):

* ``linear`` (DDPM; Song et al. 2021): :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})`,
  :math:`B = \beta_{min}t + \tfrac12(\beta_{max}-\beta_{min})t^2`; 0.1 and 20
  (:math:`\lambda_1 = -5.0`, :math:`\beta(1) = 20`).
* ``scaled_linear`` (latent diffusion / Stable Diffusion's ``"scaled_linear"``): linear in
  :math:`\sqrt\beta`, :math:`\beta(t) = (a + k t)^2` with :math:`a = \sqrt{\beta_{min}}`,
  :math:`k = \sqrt{\beta_{max}} - a`, :math:`B = a^2 t + a k t^2 + k^2 t^3/3`; defaults
  :math:`\beta_{min} = 0.85`, :math:`\beta_{max} = 12` (LDM's 0.00085 and 0.012 per step over
  1000 steps; :math:`\lambda_1 = -2.67`, as Stable Diffusion's last timestep).
* ``cosine`` (Nichol & Dhariwal 2021): :math:`\alpha_t = \cos\phi(t)/\cos\phi(0)`,
  :math:`\phi(t) = \frac\pi2\frac{c\,t + s}{1 + s}`, :math:`\beta = \frac{\pi c}{1+s}\tan\phi(t)`.
  :math:`\beta` diverges where :math:`c\,t = 1`, so time is truncated explicitly by ``c < 1``
  (``cosine_end``, default 0.9946 as DPM-Solver: :math:`\lambda_1 = -4.78`, :math:`\beta(1) = 368`).
* ``sigmoid`` (Jabri et al. 2022; Chen 2023, Algorithm 1):
  :math:`\bar\alpha(t) = \frac{\varsigma(e/\tau) - \varsigma(u)}{\varsigma(e/\tau) - \varsigma(s/\tau)}`,
  :math:`u = (s + (e - s)\,c\,t)/\tau`, :math:`\varsigma` the logistic function, with ``start``
  :math:`s`, ``end`` :math:`e`, temperature :math:`\tau` (defaults -3, 3, 1). The un-truncated
  schedule (:math:`c = 1`) reaches :math:`\bar\alpha = 0` at :math:`t = 1`, where
  :math:`\beta \sim 1/(1-t)` diverges (Chen clips :math:`\bar\alpha` at 1e-9); here time is
  truncated by the :math:`c < 1` with :math:`\lambda_1` = ``log_snr_end`` (default -5, the linear
  VP's; :math:`\beta(1) = 6.6\cdot10^3`). Computed without cancellation:
  :math:`\varsigma(a) - \varsigma(b) = -\varsigma(a)\varsigma(-b)\,\mathrm{expm1}(b - a)`, so
  :math:`B = \log\frac{\varsigma(-s/\tau)\,\mathrm{expm1}(s/\tau - e/\tau)}{\varsigma(-u)\,\mathrm{expm1}(u - e/\tau)}`
  and :math:`\beta = \dot u\,(\varsigma(u) + 1/\mathrm{expm1}(e/\tau - u))`.
* ``shifted_cosine`` (Hoogeboom et al. 2023, simple diffusion): the cosine schedule
  :math:`\alpha = \cos\phi`, :math:`\sigma = \sin\phi` with its SNR multiplied by
  :math:`\text{shift}^2`: :math:`\lambda_t = \log\text{shift} - \log\tan\phi(t)`,
  :math:`\phi(t) = \phi_1 t` (``shift`` = base resolution / resolution, e.g. 64/256 = 0.25: their
  :math:`\log(\alpha^2/\sigma^2)` shifted by :math:`2\log(64/d)`; 1 is the plain cosine).
  :math:`\lambda \to -\infty` at :math:`\phi = \pi/2`, so :math:`\phi_1 = \arctan(\text{shift}\,e^{-\lambda_{end}})
  < \pi/2` truncates it at :math:`\lambda_1` = ``log_snr_end``, by default Hoogeboom's
  :math:`\log(\alpha^2/\sigma^2) \ge -15` before the shift, :math:`-7.5 + \log\text{shift}`
  (:math:`\beta(1) = 5.7\cdot10^3`). In closed form
  :math:`\bar\alpha = \frac{\text{shift}^2\cos^2\phi}{\text{shift}^2\cos^2\phi + \sin^2\phi}`,
  :math:`B = \log(1 + \tan^2\phi/\text{shift}^2)`,
  :math:`\beta = \frac{2\phi_1\sin\phi}{\cos\phi\,(\text{shift}^2\cos^2\phi + \sin^2\phi)}`.
  Unlike Hoogeboom's code (:math:`\log(\alpha^2/\sigma^2) \le 15`) it starts at
  :math:`\lambda_0 = +\infty`, so :math:`t = 0` is the clean data as for every other schedule here.
* a user's :math:`\bar\alpha(t)` (``alpha_bar=``) or :math:`\lambda(t) = \log(\alpha_t/\sigma_t)`
  (``log_snr=``; then :math:`\bar\alpha = \varsigma(2\lambda)`), any torch callable on
  :math:`[0, 1]`; :math:`\beta` by autograd and the inverse of :math:`\lambda` by safeguarded
  Newton. Checked at construction on 4097 times: finite, strictly decreasing,
  :math:`0 < \bar\alpha \le 1` up to and including :math:`t = 1` (a schedule that reaches
  :math:`\bar\alpha = 0` at :math:`T`, where :math:`\beta` diverges, is refused: truncate it), and
  :math:`\beta \ge 0` finite on :math:`(0, 1]`. An :math:`\bar\alpha(0) < 1` (:math:`\lambda_0 < \infty`)
  means the data count as already perturbed at :math:`t = 0`, as VE's :math:`\sigma_{min}`; a
  :math:`\lambda(0) = +\infty` gives :math:`\beta(0) = 0` (the limit is not taken).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ArgumentError, check_callable, check_positive, check_range, check_real
from .linear_base import evaluate, time_derivative

#: the schedule names ``VPSDE(schedule=...)`` takes
SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid", "shifted_cosine")

#: the lowest log-SNR at T = 1 a schedule may reach: below it alpha_bar(1) < 4e-18 is zero for
#: every purpose and beta(1) diverges (a cos^2 schedule left untruncated gives 3.7e-33)
LOG_SNR_FLOOR = -20.0


def _in_float64(method):
    """Evaluate a schedule method in float64 and return ``t``'s dtype: near T the sigmoid and
    shifted cosine subtract nearly equal numbers (e - u, pi/2 - phi) that float32 cannot resolve."""

    def wrapped(self, t):
        out = method(self, t.to(torch.float64))
        return tuple(o.to(t.dtype) for o in out) if isinstance(out, tuple) else out.to(t.dtype)

    wrapped.__name__, wrapped.__doc__ = method.__name__, method.__doc__
    return wrapped


class VPSchedule(abc.ABC):
    r""":math:`\bar\alpha(t) = e^{-B(t)}` on :math:`[0, 1]`: :math:`B`, :math:`\beta = B'`, and closed forms
    of the marginal, log-SNR and its inverse where a schedule has better ones than the generic."""

    name: str

    @abc.abstractmethod
    def integrated_beta(self, t: Tensor) -> Tensor:
        r""":math:`B(t) = -\log\bar\alpha(t)`."""

    @abc.abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        r""":math:`\beta(t) = dB/dt`."""

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), torch.sqrt(-torch.expm1(-B))

    def log_snr(self, t: Tensor) -> Tensor:
        B = self.integrated_beta(t)
        return -0.5 * B - 0.5 * torch.log(-torch.expm1(-B))

    #: ``t_from_log_snr(lam)`` in closed form, or None for the generic inverse
    t_from_log_snr: Callable[[Tensor], Tensor] | None = None

    @abc.abstractmethod
    def spec(self) -> dict | None:
        """``VPSDE`` keyword arguments that rebuild this schedule, or None (a user's callable)."""

    @abc.abstractmethod
    def __repr__(self) -> str: ...


def check_betas(beta_min: float, beta_max: float) -> tuple[float, float]:
    beta_min = check_positive("beta_min", beta_min)
    beta_max = check_positive("beta_max", beta_max)
    if beta_max < beta_min:
        raise ArgumentError(f"beta_max must be >= beta_min={beta_min:g}, got {beta_max!r}")
    return beta_min, beta_max


def t_from_linear_integrated_beta(B: Tensor, beta_min: float, beta_max: float) -> Tensor:
    r"""Solve :math:`B = \beta_{min} t + \tfrac12(\beta_{max}-\beta_{min}) t^2` for t (no cancellation)."""
    slope = beta_max - beta_min
    return 2 * B / (beta_min + torch.sqrt(beta_min**2 + 2 * slope * B))


class Linear(VPSchedule):
    name = "linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = check_betas(beta_min, beta_max)

    def integrated_beta(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t.square()

    def beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def t_from_log_snr(self, lam):
        # SNR = 1 / (e^B - 1)  =>  B = log(1 + e^{-2 lam})
        return t_from_linear_integrated_beta(torch.nn.functional.softplus(-2 * lam), self.beta_min, self.beta_max)

    def spec(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def __repr__(self):
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}"


class ScaledLinear(VPSchedule):
    name = "scaled_linear"

    def __init__(self, beta_min: float = 0.85, beta_max: float = 12.0):
        self.beta_min, self.beta_max = check_betas(beta_min, beta_max)
        self._a = math.sqrt(self.beta_min)
        self._k = math.sqrt(self.beta_max) - self._a

    def integrated_beta(self, t):
        a, k = self._a, self._k
        return t * (a * a + t * (a * k + t * (k * k / 3)))

    def beta(self, t):
        return (self._a + self._k * t).square()

    def t_from_log_snr(self, lam):
        # (a + k t)^3 = a^3 + 3 k B; with y = a + k t, t = 3 B / (y^2 + a y + a^2) (no cancellation)
        a, k = self._a, self._k
        B = torch.nn.functional.softplus(-2 * lam)
        y = (a**3 + 3 * k * B).pow(1 / 3)
        return 3 * B / (y.square() + a * y + a * a)

    def spec(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def __repr__(self):
        return f"schedule='scaled_linear', beta_min={self.beta_min:g}, beta_max={self.beta_max:g}"


class Cosine(VPSchedule):
    name = "cosine"

    def __init__(self, cosine_s: float = 0.008, cosine_end: float = 0.9946):
        self.cosine_s = check_positive("cosine_s", cosine_s)
        self.cosine_end = check_range("cosine_end", cosine_end, 0.0, 1.0)
        s = self.cosine_s
        self._phi0 = 0.5 * math.pi * s / (1 + s)
        self._dphi = 0.5 * math.pi * self.cosine_end / (1 + s)

    def _phi(self, t):
        return self._phi0 + self._dphi * t

    def integrated_beta(self, t):
        return -2 * (torch.cos(self._phi(t)).log() - math.log(math.cos(self._phi0)))

    def beta(self, t):
        return 2 * self._dphi * torch.tan(self._phi(t))

    def marginal(self, t):
        phi = self._phi(t)
        cos0 = math.cos(self._phi0)
        # 1 - cos^2(phi)/cos^2(phi0) = sin(phi - phi0) sin(phi + phi0) / cos^2(phi0), no cancellation
        var = torch.sin(phi - self._phi0) * torch.sin(phi + self._phi0) / cos0**2
        return torch.cos(phi) / cos0, var.sqrt()

    def log_snr(self, t):
        alpha, sigma = self.marginal(t)
        return alpha.log() - sigma.log()

    def t_from_log_snr(self, lam):
        # alpha^2 = sigmoid(2 lam)  =>  cos(phi) = cos(phi0) sqrt(sigmoid(2 lam))
        phi = torch.arccos(math.cos(self._phi0) * torch.sigmoid(2 * lam).sqrt())
        return (phi - self._phi0) / self._dphi

    def spec(self):
        return {"cosine_s": self.cosine_s, "cosine_end": self.cosine_end}

    def __repr__(self):
        return f"schedule='cosine', cosine_s={self.cosine_s:g}, cosine_end={self.cosine_end:g}"


def _check_log_snr_end(value: float) -> float:
    value = check_real("log_snr_end", value)
    if not LOG_SNR_FLOOR <= value < 0.0:
        raise ArgumentError(
            f"log_snr_end must be a number in [-20, 0): the log-SNR log(alpha_1/sigma_1) at T = 1, where the "
            f"noise must dominate (the linear VP ends at -5.0), got {value!r}"
        )
    return value


class Sigmoid(VPSchedule):
    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, log_snr_end: float | None = None):
        self.start = check_real("sigmoid_start", start)
        self.end = check_real("sigmoid_end", end)
        if not self.end > self.start:
            raise ArgumentError(f"sigmoid_end must be > sigmoid_start={self.start:g}, got {end!r}")
        self.tau = check_positive("sigmoid_tau", tau)
        self.log_snr_end = _check_log_snr_end(-5.0 if log_snr_end is None else log_snr_end)
        self._s, self._e = self.start / self.tau, self.end / self.tau
        # log K, K = sigmoid(-s) (1 - e^{s - e}): alpha_bar = sigmoid(-u) (1 - e^{u - e}) / K
        self._log_norm = -math.log1p(math.exp(self._s)) + math.log(-math.expm1(self._s - self._e))
        # the truncation c: u at t = 1 solves alpha_bar = sigmoid(2 log_snr_end) (see t_from_log_snr)
        u1 = self._u_of_alpha_bar(1 / (1 + math.exp(-2 * self.log_snr_end)))
        self._du = u1 - self._s  # du/dt
        self._c = self._du / (self._e - self._s)

    def _u(self, t):
        return self._s + self._du * t

    @_in_float64
    def integrated_beta(self, t):
        u = self._u(t)
        # -log alpha_bar with sigma(a) - sigma(b) = -sigma(a) sigma(-b) expm1(b - a)
        return self._log_norm - (torch.nn.functional.logsigmoid(-u) + torch.log(-torch.expm1(u - self._e)))

    @_in_float64
    def beta(self, t):
        u = self._u(t)
        return self._du * (torch.sigmoid(u) + 1 / torch.expm1(self._e - u))

    def _u_of_alpha_bar(self, abar):
        # sigmoid(-u) (1 - e^{u - e}) = alpha_bar K; with w = e^u, (1 - w e^{-e}) / (1 + w) = r = alpha_bar K
        r = abar * math.exp(self._log_norm)
        w = (1 - r) / (r + math.exp(-self._e))
        return w.log() if isinstance(w, Tensor) else math.log(w)

    @_in_float64
    def t_from_log_snr(self, lam):
        return (self._u_of_alpha_bar(torch.sigmoid(2 * lam)) - self._s) / self._du  # alpha_bar = sigmoid(2 lam)

    def spec(self):
        return {"sigmoid_start": self.start, "sigmoid_end": self.end, "sigmoid_tau": self.tau,
                "log_snr_end": self.log_snr_end}

    def __repr__(self):
        return (f"schedule='sigmoid', sigmoid_start={self.start:g}, sigmoid_end={self.end:g}, "
                f"sigmoid_tau={self.tau:g}, log_snr_end={self.log_snr_end:g}")


class ShiftedCosine(VPSchedule):
    name = "shifted_cosine"

    def __init__(self, shift: float = 1.0, log_snr_end: float | None = None):
        self.shift = check_positive("shift", shift)
        default_end = -7.5 + math.log(self.shift)  # Hoogeboom's log(alpha^2/sigma^2) >= -15, shifted
        self.log_snr_end = _check_log_snr_end(default_end if log_snr_end is None else log_snr_end)
        self._phi1 = math.atan(self.shift * math.exp(-self.log_snr_end))
        self._s2 = self.shift**2

    def _trig(self, t):
        phi = self._phi1 * t
        return torch.sin(phi), torch.cos(phi)

    @_in_float64
    def integrated_beta(self, t):
        return torch.log1p(torch.tan(self._phi1 * t).square() / self._s2)

    @_in_float64
    def beta(self, t):
        sin, cos = self._trig(t)
        return 2 * self._phi1 * sin / (cos * (self._s2 * cos.square() + sin.square()))

    @_in_float64
    def marginal(self, t):
        sin, cos = self._trig(t)
        norm = torch.sqrt(self._s2 * cos.square() + sin.square())
        return self.shift * cos / norm, sin / norm

    @_in_float64
    def log_snr(self, t):
        return math.log(self.shift) - torch.log(torch.tan(self._phi1 * t))

    @_in_float64
    def t_from_log_snr(self, lam):
        return torch.atan(self.shift * torch.exp(-lam)) / self._phi1

    def spec(self):
        return {"shift": self.shift, "log_snr_end": self.log_snr_end}

    def __repr__(self):
        return f"schedule='shifted_cosine', shift={self.shift:g}, log_snr_end={self.log_snr_end:g}"


# ---- a user's schedule -----------------------------------------------------------------------------
_CHECK_POINTS = 4097


class _UserSchedule(VPSchedule):
    name = "custom"

    def __init__(self, fn: Callable, what: str):
        self._fn = check_callable(what, fn, f"{what}(t)")
        self._what = what

    def _eval(self, t: Tensor) -> Tensor:
        return evaluate(self._fn, t, self._what)

    def beta(self, t):
        return time_derivative(self.integrated_beta, t, self._what)

    def spec(self):
        return None

    def _check(self) -> None:
        t = torch.linspace(0.0, 1.0, _CHECK_POINTS, dtype=torch.float64)
        values = self._eval(t)
        name = self._what
        bad = ~torch.isfinite(values)
        if name == "log_snr":
            bad[0] = bad[0] & (values[0] != math.inf)  # +inf at t = 0: clean data there
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ArgumentError(f"{name}(t) must be finite on [0, 1], got {float(values[i])} at t = {float(t[i]):.6g}")
        if name == "alpha_bar":
            if not bool(((values > 0) & (values <= 1)).all()):
                i = int((~((values > 0) & (values <= 1))).nonzero()[0])
                hint = (" (an alpha_bar that reaches 0 at T = 1 makes beta(t) = -d log alpha_bar/dt diverge there: "
                        "truncate it, e.g. alpha_bar(c * t) with c < 1)" if float(values[i]) <= 0 else "")
                raise ArgumentError(
                    f"alpha_bar(t) must lie in (0, 1] on [0, 1], got {float(values[i])!r} at t = {float(t[i]):.6g}{hint}"
                )
        end = float(values[-1])
        lam_T = 0.5 * math.log(end / (1 - end)) if name == "alpha_bar" and end < 1 else end
        if lam_T < LOG_SNR_FLOOR:
            raise ArgumentError(
                f"{name}(t) reaches alpha_bar = 0 at T = 1 ({name}(1) = {float(values[-1]):.3g}, log-SNR below "
                f"{LOG_SNR_FLOOR:g}): beta(t) = -d log alpha_bar/dt diverges there; truncate the schedule, "
                f"e.g. alpha_bar(c * t) with c < 1 so that alpha_bar(1) > 0"
            )
        dec = values[1:] < values[:-1]
        if not bool(dec.all()):
            i = int((~dec).nonzero()[0])
            raise ArgumentError(
                f"{name}(t) must be strictly decreasing on [0, 1] (noise grows with t), but "
                f"{name}({float(t[i]):.6g}) = {float(values[i]):.6g} <= {name}({float(t[i + 1]):.6g}) = {float(values[i + 1]):.6g}"
            )
        beta = self.beta(t[1:])
        ok = torch.isfinite(beta) & (beta >= 0)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            raise ArgumentError(
                f"beta(t) = -d log alpha_bar/dt from {name} must be finite and >= 0 on (0, 1], got "
                f"{float(beta[i])} at t = {float(t[i + 1]):.6g} (autograd of {name}(t))"
            )


class AlphaBar(_UserSchedule):
    r"""A user's :math:`\bar\alpha(t) = \alpha_t^2`."""

    def __init__(self, fn: Callable):
        super().__init__(fn, "alpha_bar")
        self._check()

    def integrated_beta(self, t):
        return -torch.log(self._eval(t))

    def __repr__(self):
        return f"alpha_bar={self._fn!r}"


class LogSNR(_UserSchedule):
    r"""A user's log-SNR :math:`\lambda(t) = \log(\alpha_t/\sigma_t)`: :math:`\bar\alpha = \varsigma(2\lambda)`,
    :math:`1-\bar\alpha = \varsigma(-2\lambda)`."""

    def __init__(self, fn: Callable):
        super().__init__(fn, "log_snr")
        self._check()

    def integrated_beta(self, t):
        return torch.nn.functional.softplus(-2 * self._eval(t))

    def beta(self, t):
        # -2 sigmoid(-2 lam) dlam/dt; 0 where lam = +inf (t = 0 of a schedule starting at clean data)
        lam = self._eval(t)
        d = time_derivative(self._eval, t, "log_snr")
        return torch.where(lam == math.inf, torch.zeros_like(lam), -2 * torch.sigmoid(-2 * lam) * d)

    def marginal(self, t):
        lam = self._eval(t)
        return torch.sigmoid(2 * lam).sqrt(), torch.sigmoid(-2 * lam).sqrt()

    def log_snr(self, t):
        return self._eval(t)

    def __repr__(self):
        return f"log_snr={self._fn!r}"
