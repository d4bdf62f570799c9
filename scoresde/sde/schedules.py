r"""Noise schedules of the variance-preserving SDE, each in closed form where one exists.

A VP schedule is the signal level :math:`\bar\alpha(t) = \alpha_t^2 = e^{-B(t)}` on :math:`[0, 1]`,
:math:`B(t) = \int_0^t \beta(s)\,ds`, decreasing from (about) 1 to a small positive value; the SDE
is :math:`dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW` with :math:`\sigma_t^2 = 1 - \bar\alpha(t)`
and log-SNR :math:`\lambda_t = \log\bar\alpha - \log(1 - \bar\alpha)`. Built in:

* ``linear`` (DDPM; Song et al. 2021): :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})`,
  :math:`B = \beta_{min}t + \tfrac12(\beta_{max}-\beta_{min})t^2`.
* ``scaled_linear`` (latent diffusion / Stable Diffusion's ``"scaled_linear"``): linear in
  :math:`\sqrt\beta`, :math:`\beta(t) = (a + k t)^2` with :math:`a = \sqrt{\beta_{min}}`,
  :math:`k = \sqrt{\beta_{max}} - a`, :math:`B = a^2 t + a k t^2 + k^2 t^3/3`; defaults
  :math:`\beta_{min} = 0.85`, :math:`\beta_{max} = 12` (LDM's 0.00085 and 0.012 per step over
  1000 steps).
* ``cosine`` (Nichol & Dhariwal 2021): :math:`\alpha_t = \cos\phi(t)/\cos\phi(0)`,
  :math:`\phi(t) = \frac\pi2\frac{c\,t + s}{1 + s}`, :math:`\beta = \frac{\pi c}{1+s}\tan\phi(t)`.
  :math:`\beta` diverges where :math:`c\,t = 1`, so time is truncated explicitly by ``c < 1``
  (``cosine_end``, default 0.9946 as DPM-Solver: :math:`\lambda_1 \approx -4.8`).
* ``sigmoid`` (Jabri et al. 2022; Chen 2023, Algorithm 1):
  :math:`\bar\alpha(t) = \frac{\varsigma(e/\tau) - \varsigma(u)}{\varsigma(e/\tau) - \varsigma(s/\tau)}`,
  :math:`u = (s + (e - s)\,c\,t)/\tau`, :math:`\varsigma` the logistic function, with ``start``
  :math:`s`, ``end`` :math:`e`, temperature :math:`\tau` (defaults -3, 3, 1). The un-truncated
  schedule (:math:`c = 1`) reaches :math:`\bar\alpha = 0` at :math:`t = 1`, where
  :math:`\beta \sim 1/(1-t)` diverges (Chen clips :math:`\bar\alpha` at 1e-9); here time is
  truncated by :math:`c < 1` chosen so that :math:`\lambda_1` = ``log_snr_end`` (default -10, so
  :math:`\beta(1) \approx 6.6\cdot10^3`). Computed without cancellation:
  :math:`\varsigma(a) - \varsigma(b) = -\varsigma(a)\varsigma(-b)\,\mathrm{expm1}(b - a)`, so
  :math:`B = \log\frac{\varsigma(-s/\tau)\,\mathrm{expm1}(s/\tau - e/\tau)}{\varsigma(-u)\,\mathrm{expm1}(u - e/\tau)}`
  and :math:`\beta = \dot u\,(\varsigma(u) + 1/\mathrm{expm1}(e/\tau - u))`.
* ``shifted_cosine`` (Hoogeboom et al. 2023, simple diffusion): the cosine log-SNR shifted by
  :math:`2\log(\text{shift})`, :math:`\lambda_t = -2\log\tan\phi(t) + 2\log\text{shift}`,
  :math:`\phi(t) = \phi_1 t` (``shift`` = base resolution / resolution, e.g. 64/256 = 0.25; 1 is
  the plain cosine without offset). :math:`\lambda \to -\infty` at :math:`\phi = \pi/2`, so
  :math:`\phi_1 = \arctan(\text{shift}\,e^{-\lambda_{end}/2}) < \pi/2` truncates it at
  ``log_snr_end`` (default Hoogeboom's :math:`-15 + 2\log\text{shift}`). In closed form
  :math:`\bar\alpha = \frac{\text{shift}^2\cos^2\phi}{\text{shift}^2\cos^2\phi + \sin^2\phi}`,
  :math:`B = \log(1 + \tan^2\phi/\text{shift}^2)`,
  :math:`\beta = \frac{2\phi_1\sin\phi}{\cos\phi\,(\text{shift}^2\cos^2\phi + \sin^2\phi)}`.
  Unlike Hoogeboom's code (:math:`\lambda_{max} = 15`) it starts at :math:`\lambda_0 = +\infty`, so
  :math:`t = 0` is the clean data as for every other schedule here.
* a user's :math:`\bar\alpha(t)` (``alpha_bar=``) or :math:`\lambda(t)` (``log_snr=``), any torch
  callable on :math:`[0, 1]`; :math:`\beta` by autograd and the inverse of :math:`\lambda` by
  safeguarded Newton. Checked at construction on 4097 times: finite, strictly decreasing,
  :math:`0 < \bar\alpha \le 1` up to and including :math:`t = 1` (a schedule that reaches
  :math:`\bar\alpha = 0` at :math:`T`, where :math:`\beta` diverges, is refused: truncate it), and
  :math:`\beta \ge 0` finite. An :math:`\bar\alpha(0) < 1` (:math:`\lambda_0 < \infty`) means the
  data count as already perturbed at :math:`t = 0`, as VE's :math:`\sigma_{min}`.
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
    if not -50.0 <= value <= 5.0:
        raise ArgumentError(
            f"log_snr_end must be a number in [-50, 5] (the log-SNR at T = 1; the built-in schedules end "
            f"near -5 to -18), got {value!r}"
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
        self.log_snr_end = _check_log_snr_end(-10.0 if log_snr_end is None else log_snr_end)
        self._s, self._e = self.start / self.tau, self.end / self.tau
        sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        # time truncation c: alpha_bar(1) = sigmoid(log_snr_end), i.e. sigmoid(u_1) = v_e - abar_1 (v_e - v_s)
        v_s, v_e = sig(self._s), sig(self._e)
        p = v_e - sig(self.log_snr_end) * (v_e - v_s)
        u1 = math.log(p / (1 - p))
        self._c = (u1 * self.tau - self.start) / (self.end - self.start)
        self._du = (self._e - self._s) * self._c  # du/dt
        self._log_norm = math.log(1 / (1 + math.exp(self._s))) + math.log(-math.expm1(self._s - self._e))

    def _u(self, t):
        return self._s + self._du * t

    def integrated_beta(self, t):
        u = self._u(t)
        # -log alpha_bar with sigma(a) - sigma(b) = -sigma(a) sigma(-b) expm1(b - a)
        return self._log_norm - (torch.nn.functional.logsigmoid(-u) + torch.log(-torch.expm1(u - self._e)))

    def beta(self, t):
        u = self._u(t)
        return self._du * (torch.sigmoid(u) + 1 / torch.expm1(self._e - u))

    def t_from_log_snr(self, lam):
        # sigmoid(-u) (1 - e^{u - e}) = alpha_bar K with w = e^u:  (1 - w e^{-e}) / (1 + w) = r
        r = torch.sigmoid(lam) * math.exp(self._log_norm)
        w = (1 - r) / (r + math.exp(-self._e))
        return (w.log() - self._s) / self._du

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
        default_end = -15.0 + 2 * math.log(self.shift)
        self.log_snr_end = _check_log_snr_end(default_end if log_snr_end is None else log_snr_end)
        self._phi1 = math.atan(self.shift * math.exp(-0.5 * self.log_snr_end))
        self._s2 = self.shift**2

    def _trig(self, t):
        phi = self._phi1 * t
        return torch.sin(phi), torch.cos(phi)

    def integrated_beta(self, t):
        return torch.log1p(torch.tan(self._phi1 * t).square() / self._s2)

    def beta(self, t):
        sin, cos = self._trig(t)
        return 2 * self._phi1 * sin / (cos * (self._s2 * cos.square() + sin.square()))

    def marginal(self, t):
        sin, cos = self._trig(t)
        norm = torch.sqrt(self._s2 * cos.square() + sin.square())
        return self.shift * cos / norm, sin / norm

    def log_snr(self, t):
        return 2 * math.log(self.shift) - 2 * torch.log(torch.tan(self._phi1 * t))

    def t_from_log_snr(self, lam):
        return torch.atan(self.shift * torch.exp(-0.5 * lam)) / self._phi1

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
    r"""A user's log-SNR :math:`\lambda(t)`: :math:`\bar\alpha = \varsigma(\lambda)`, :math:`1-\bar\alpha = \varsigma(-\lambda)`."""

    def __init__(self, fn: Callable):
        super().__init__(fn, "log_snr")
        self._check()

    def integrated_beta(self, t):
        return torch.nn.functional.softplus(-self._eval(t))

    def beta(self, t):
        # sigmoid(-lam) * (-dlam/dt); 0 where lam = +inf (t = 0 of a schedule starting at clean data)
        lam = self._eval(t)
        d = time_derivative(self._eval, t, "log_snr")
        return torch.where(lam == math.inf, torch.zeros_like(lam), -torch.sigmoid(-lam) * d)

    def marginal(self, t):
        lam = self._eval(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    def log_snr(self, t):
        return self._eval(t)

    def __repr__(self):
        return f"log_snr={self._fn!r}"
