r"""The one base of linear SDEs: marginals, log-SNR and the conversions between predictions.

A linear SDE :math:`dx = f(t)\,x\,dt + g(t)\,dW` has a Gaussian transition kernel

.. math::
    x_t = \alpha_t x_0 + \sigma_t n,\quad n \sim \mathcal N(0, I),\qquad
    f(t) = \frac{d\log\alpha_t}{dt},\qquad g(t)^2 = \frac{d\sigma_t^2}{dt} - 2 f(t)\,\sigma_t^2,

so the pair :math:`(\alpha_t, \sigma_t)` defines the process. :class:`LinearSDEBase` asks its
subclasses for :meth:`~LinearSDEBase.marginal` only; ``f``, ``g``, the log signal-to-noise ratio
:math:`\lambda_t = \log(\alpha_t/\sigma_t)`, its inverse and the derivatives the solvers use
follow from it (by autograd where a subclass gives no closed form).

**Predictions.** A network trained under a linear SDE predicts one of four equivalent
quantities at :math:`(x, t)`, related by :math:`x = \alpha_t x_0 + \sigma_t\epsilon`:

* ``"score"``: :math:`s = \nabla_x\log p_t(x) = -\epsilon/\sigma_t`;
* ``"eps"``: the noise :math:`\epsilon`;
* ``"x0"``: the clean data :math:`x_0` (Tweedie's :math:`x_0 = (x + \sigma_t^2 s)/\alpha_t`);
* ``"v"``: :math:`v = (\alpha_t\epsilon - \sigma_t x_0)/\sqrt{\alpha_t^2 + \sigma_t^2}`, Salimans &
  Ho's (2022) velocity on VP, where :math:`\alpha_t^2 + \sigma_t^2 = 1` (the convention of
  diffusers' ``prediction_type="v_prediction"``).

With ``data_std`` :math:`\sigma_d \ne 1`, the ``x0`` and ``v`` kinds are in units of the data's
std, as :class:`~scoresde.models.ScoreModel` parameterises them: the ``x0`` kind is
:math:`x_0/\sigma_d` and the ``v`` kind is :math:`v` with :math:`a_t = \alpha_t\sigma_d` in place of
:math:`\alpha_t` (and :math:`x_0/\sigma_d` in place of :math:`x_0`), so both have unit scale.
:meth:`~LinearSDEBase.to_score`, :meth:`~LinearSDEBase.to_eps`, :meth:`~LinearSDEBase.to_x0` and
:meth:`~LinearSDEBase.to_v` are the only place in scoresde where these conversions are written.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice, check_float_tensor, check_positive
from .base import SDE, expand_to

#: the kinds of prediction the conversions take and return
PREDICTION_KINDS = ("score", "eps", "x0", "v")


def evaluate(fn: Callable, t: Tensor, name: str) -> Tensor:
    """``fn(t)`` as a tensor of ``t``'s shape, dtype and device (a number broadcasts)."""
    out = torch.as_tensor(fn(t), dtype=t.dtype, device=t.device)
    if out.shape != t.shape:
        try:
            out = out.expand(t.shape)
        except RuntimeError:
            raise ArgumentError(
                f"{name}(t) must return a number or a tensor of t's shape {tuple(t.shape)}, "
                f"got shape {tuple(out.shape)}"
            ) from None
    return out


def time_derivative(fn: Callable[[Tensor], Tensor], t: Tensor, name: str) -> Tensor:
    """:math:`d\\,fn(t)/dt` by autograd, elementwise (``fn`` acts on each time separately).

    Switched on even under ``torch.no_grad()``; no graph is kept.
    """
    with torch.enable_grad():
        tg = t.detach().requires_grad_(True)
        y = fn(tg)
        if not (isinstance(y, Tensor) and y.requires_grad):
            raise ArgumentError(
                f"{name} must be differentiable in t by autograd (written with torch operations on t), "
                f"or give its derivative in closed form"
            )
        (d,) = torch.autograd.grad(y.sum(), tg, allow_unused=True)
    return torch.zeros_like(t) if d is None else d


class LinearSDEBase(SDE):
    r"""Abstract base of the linear SDEs :math:`dx = f(t)\,x\,dt + g(t)\,dW`, with
    :math:`x_t = \alpha_t x_0 + \sigma_t n` (see the module).

    A subclass defines :meth:`marginal`; everything else has a generic version that a subclass
    may override with a closed form (VP, sub-VP and VE do). None of the methods reads a tensor's
    value on the host, so they run inside solver steps on any device. ``t`` is a number, a
    scalar tensor or has shape ``(batch,)``; outputs have ``t``'s shape, dtype and device.

    Class attributes (properties of the process that solvers branch on):

    * ``alpha_is_one`` -- True when :math:`\alpha_t = 1` for all t (no drift, :math:`f = 0`:
      VE-type, :math:`x_t = x_0 + \sigma_t n`). The PF-ODE then has no linear term, the
      likelihood's ODE steps in :math:`\sigma` instead of t, and the ancestral sampler uses
      the posterior variance (SMLD).
    * ``variance_preserving`` -- True when :math:`\alpha_t^2 + \sigma_t^2 = 1` for all t (VP
      with any schedule, :class:`~scoresde.sde.DiscreteVPSDE`); then ``v`` is Salimans & Ho's.
    """

    alpha_is_one: bool = False
    variance_preserving: bool = False
    _prior_std_value: float | None = None

    # ---- the process ---------------------------------------------------------------------
    @abc.abstractmethod
    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r""":math:`(\alpha_t, \sigma_t)`, each of ``t``'s shape, dtype and device."""

    def f(self, t: Tensor | float) -> Tensor:
        r"""Drift coefficient :math:`f(t) = d\log\alpha_t/dt` (generic: autograd of the marginal)."""
        t = self.time(t)
        return time_derivative(lambda s: self.marginal(s)[0].log(), t, f"{type(self).__name__}.marginal")

    def g(self, t: Tensor | float) -> Tensor:
        r"""Diffusion coefficient :math:`g(t) = \sqrt{d\sigma_t^2/dt - 2 f(t)\sigma_t^2}`
        (generic: autograd of the marginal)."""
        t = self.time(t)
        dvar = time_derivative(lambda s: self.marginal(s)[1].square(), t, f"{type(self).__name__}.marginal")
        _, sigma = self.marginal(t)
        return (dvar - 2 * self.f(t) * sigma.square()).clamp_min(0).sqrt()

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = self.time(t, like=x)
        return expand_to(self.f(t), x) * x

    def diffusion(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = self.time(t, like=x)
        return expand_to(self.g(t), x)

    def marginal_prob(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""Mean :math:`\alpha_t x_0` and std :math:`\sigma_t` (broadcastable to ``x0``) of
        :math:`p(x_t | x_0)`; ``t`` is a scalar or has ``x0``'s leading (batch) shape."""
        check_float_tensor("x0", x0)
        t = self.time(t, like=x0)
        alpha, sigma = self.marginal(t)
        return expand_to(alpha, x0) * x0, expand_to(sigma, x0)

    @property
    def prior_std(self) -> float:
        r"""Std of the prior :math:`p_T = \mathcal N(0, \mathtt{prior\_std}^2 I)`; default :math:`\sigma_T`."""
        if self._prior_std_value is None:
            _, sigma = self.marginal(torch.tensor(float(self.T), dtype=torch.float64))
            self._prior_std_value = float(sigma)
        return self._prior_std_value

    @prior_std.setter
    def prior_std(self, value: float) -> None:
        self._prior_std_value = check_positive("prior_std", value)

    # ---- log-SNR and derivatives ---------------------------------------------------------
    def log_snr(self, t: Tensor | float) -> Tensor:
        r"""Log signal-to-noise ratio :math:`\lambda_t = \log\alpha_t - \log\sigma_t` (decreasing in t)."""
        alpha, sigma = self.marginal(t)
        return alpha.log() - sigma.log()

    def dlog_alpha_dt(self, t: Tensor | float) -> Tensor:
        r""":math:`d\log\alpha_t/dt = f(t)`."""
        return self.f(t)

    def dsigma2_dt(self, t: Tensor | float) -> Tensor:
        r""":math:`d\sigma_t^2/dt = 2 f(t)\sigma_t^2 + g(t)^2`."""
        t = self.time(t)
        _, sigma = self.marginal(t)
        return 2 * self.f(t) * sigma.square() + self.g(t).square()

    def dlog_snr_dt(self, t: Tensor | float) -> Tensor:
        r""":math:`d\lambda_t/dt = f(t) - \tfrac12 (d\sigma_t^2/dt)/\sigma_t^2 = -\tfrac12 g(t)^2/\sigma_t^2 \le 0`."""
        t = self.time(t)
        _, sigma = self.marginal(t)
        return self.dlog_alpha_dt(t) - 0.5 * self.dsigma2_dt(t) / sigma.square()

    #: safeguarded Newton iterations of the generic inverse (each at least halves the bracket)
    _INVERSE_ITERATIONS = 60

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""The time :math:`t \in [0, T]` with :math:`\lambda_t` = ``lam`` (inverse of :meth:`log_snr`).

        Generic version for any monotone :math:`\lambda_t`: Newton steps kept inside a bracket
        that starts as :math:`[0, T]`, bisection where Newton would leave it; a fixed number of
        iterations (no host synchronisation). A ``lam`` beyond the range of :math:`\lambda` gives
        the nearer end of :math:`[0, T]`.
        """
        check_float_tensor("lam", lam)
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, float(self.T))
        t = 0.5 * (lo + hi)
        for _ in range(self._INVERSE_ITERATIONS):
            resid = self.log_snr(t) - lam  # lambda decreases: resid > 0 => t too small
            lo = torch.where(resid > 0, t, lo)
            hi = torch.where(resid > 0, hi, t)
            newton = t - resid / self.dlog_snr_dt(t)
            t = torch.where(torch.isfinite(newton), newton.clamp(lo, hi), 0.5 * (lo + hi))
        return t

    # ---- conversions between predictions ---------------------------------------------------
    def _scales(self, x: Tensor, t: Tensor | float, kind: str, data_std: float,
                marginal: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, float]:
        check_choice("kind", kind, PREDICTION_KINDS)
        if data_std != 1.0:
            data_std = check_positive("data_std", data_std)
        if marginal is None:
            alpha, sigma = self.marginal(self.time(t, like=x))
        else:  # a solver's precomputed grid: no check of t and no recomputation per evaluation
            alpha, sigma = marginal
        return expand_to(alpha, x), expand_to(sigma, x), data_std

    def to_score(self, pred: Tensor, x: Tensor, t: Tensor | float, kind: str, *, data_std: float = 1.0,
               marginal: tuple[Tensor, Tensor] | None = None) -> Tensor:
        r"""The score :math:`\nabla_x\log p_t(x)` from a prediction ``pred`` of type ``kind``
        (``"score"``, ``"eps"``, ``"x0"``, ``"v"``) at ``(x, t)``; see the module for the kinds
        and ``data_std``. ``t`` is a scalar or has ``x``'s leading (batch) shape. ``marginal``:
        :math:`(\alpha_t, \sigma_t)` at ``t`` when the caller already has them (a solver's grid,
        :meth:`~scoresde.sampling.context.Context.predict`), so they are not recomputed; the same
        holds for the other conversions."""
        alpha, sigma, sd = self._scales(x, t, kind, data_std, marginal)
        if kind == "score":
            return pred
        if kind == "eps":
            return -pred / sigma
        if kind == "x0":
            return (alpha * sd * pred - x) / sigma.square()
        # x = a x0' + sigma n with x0' = x0/sd, a = alpha sd, r^2 = a^2 + sigma^2 and
        # v = (a n - sigma x0') / r   =>   sigma x + a r v = r^2 n
        a = alpha * sd
        r2 = a.square() + sigma.square()
        n = (sigma * x + a * r2.sqrt() * pred) / r2
        return -n / sigma

    def to_eps(self, pred: Tensor, x: Tensor, t: Tensor | float, kind: str, *, data_std: float = 1.0,
               marginal: tuple[Tensor, Tensor] | None = None) -> Tensor:
        r"""The noise :math:`\epsilon = (x - \alpha_t x_0)/\sigma_t` from a prediction of type ``kind``."""
        alpha, sigma, sd = self._scales(x, t, kind, data_std, marginal)
        if kind == "score":
            return -sigma * pred
        if kind == "eps":
            return pred
        if kind == "x0":
            return (x - alpha * sd * pred) / sigma
        a = alpha * sd
        r2 = a.square() + sigma.square()
        return (sigma * x + a * r2.sqrt() * pred) / r2

    def to_x0(self, pred: Tensor, x: Tensor, t: Tensor | float, kind: str, *, data_std: float = 1.0,
               marginal: tuple[Tensor, Tensor] | None = None) -> Tensor:
        r"""The clean data :math:`x_0 = (x - \sigma_t\epsilon)/\alpha_t` (Tweedie's
        :math:`(x + \sigma_t^2 s)/\alpha_t` from a score), in units of ``data_std``, from a
        prediction of type ``kind``."""
        alpha, sigma, sd = self._scales(x, t, kind, data_std, marginal)
        if kind == "score":
            return (x + sigma.square() * pred) / (alpha * sd)
        if kind == "eps":
            return (x - sigma * pred) / (alpha * sd)
        if kind == "x0":
            return pred
        # from x = a x0' + sigma n and v = (a n - sigma x0') / r:  a x - sigma r v = r^2 x0'
        a = alpha * sd
        r2 = a.square() + sigma.square()
        return (a * x - sigma * r2.sqrt() * pred) / r2

    def to_v(self, pred: Tensor, x: Tensor, t: Tensor | float, kind: str, *, data_std: float = 1.0,
               marginal: tuple[Tensor, Tensor] | None = None) -> Tensor:
        r""":math:`v = (a_t\epsilon - \sigma_t x_0')/r_t` with :math:`a_t = \alpha_t\sigma_d`,
        :math:`x_0' = x_0/\sigma_d`, :math:`r_t^2 = a_t^2 + \sigma_t^2` (Salimans & Ho on VP with
        :math:`\sigma_d = 1`), from a prediction of type ``kind``."""
        alpha, sigma, sd = self._scales(x, t, kind, data_std, marginal)
        if kind == "v":
            return pred
        a = alpha * sd
        r2 = a.square() + sigma.square()
        if kind == "x0":  # eps = (x - a x0') / sigma  =>  v = (a x - r^2 x0') / (sigma r)
            return (a * x - r2 * pred) / (sigma * r2.sqrt())
        eps = -sigma * pred if kind == "score" else pred  # x0' = (x - sigma eps) / a
        return (r2 * eps - sigma * x) / (a * r2.sqrt())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T:g})"
