r"""The SDE interface every solver, sampler and likelihood in scoresde works with.

A forward SDE on :math:`t \in [0, T]` (Itô, diagonal noise)

.. math::  dx = f(x, t)\,dt + g(x, t)\,dW

turns data into noise. A user plugs in their own process by subclassing :class:`SDE` and
defining :meth:`SDE.drift` and :meth:`SDE.diffusion`; everything that needs no closed-form
transition kernel (reverse-time sampling, the probability-flow ODE, likelihoods, sliced score
matching, simulation with torchsde) then works. Linear SDEs, whose kernel is Gaussian in closed
form, derive from :class:`~scoresde.sde.LinearSDEBase` (:mod:`scoresde.sde.linear_base`).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import (
    ArgumentError,
    NoTransitionKernelError,
    as_time,
    check_bool,
    check_callable,
    check_device,
    check_dtype,
    check_float_tensor,
    check_positive,
    check_shape,
)

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class SDE(abc.ABC):
    r"""Base class of forward SDEs :math:`dx = f(x,t)\,dt + g(x,t)\,dW` on :math:`[0, T]`.

    Subclass and define :meth:`drift` and :meth:`diffusion`. Set, as class or instance
    attributes:

    * ``T`` -- end time (default 1.0);
    * ``eps`` -- the smallest time samplers and likelihoods go down to (default 1e-5);
    * ``prior_std`` -- the prior :math:`p_T = \mathcal N(0, \mathtt{prior\_std}^2 I)`, or override
      :meth:`prior_sample` and :meth:`prior_log_prob` for another prior;
    * ``state_dependent_diffusion`` -- set True when ``diffusion`` depends on ``x``. The noise is
      then assumed diagonal with :math:`g_i` a function of :math:`x_i` (and t) only, and the
      reverse drift gains the term :math:`-\partial_{x_i} g_i^2` (Song et al. 2021, eq. 16).
    """

    T: float = 1.0
    eps: float = 1e-5
    prior_std: float | None = None
    state_dependent_diffusion: bool = False

    # ---- the process -------------------------------------------------------------------
    @abc.abstractmethod
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """:math:`f(x, t)`, same shape as ``x``; ``t`` is a scalar or has shape ``(batch,)``."""

    @abc.abstractmethod
    def diffusion(self, x: Tensor, t: Tensor) -> Tensor:
        """:math:`g(x, t)`, a tensor that broadcasts against ``x`` (diagonal or scalar noise)."""

    def time(self, t: Tensor | float, like: Tensor | None = None, name: str = "t") -> Tensor:
        """``t`` as a floating tensor, checked to lie in ``[0, T]``."""
        return as_time(t, self.T, like=like, name=name)

    # ---- prior ---------------------------------------------------------------------------
    def _prior_std(self) -> float:
        if self.prior_std is None:
            raise NoTransitionKernelError(
                f"{type(self).__name__} defines no prior: set its prior_std attribute, or "
                "override prior_sample and prior_log_prob"
            )
        return check_positive("prior_std", self.prior_std)

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        r"""Draw :math:`x_T \sim p_T = \mathcal N(0, \mathtt{prior\_std}^2 I)` of the given shape.

        ``device`` defaults to the generator's; a generator on another device than ``device``
        is refused (torch cannot draw with it there).
        """
        shape = check_shape("shape", shape)
        dtype = check_dtype("dtype", dtype or torch.get_default_dtype())
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ArgumentError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if device is not None:
            device = check_device("device", device)
        if generator is not None:
            if device is None:
                device = generator.device
            elif generator.device.type != device.type:
                raise ArgumentError(
                    f"generator is on {generator.device} but device={str(device)!r}; "
                    "give a generator of the device the samples are drawn on"
                )
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self._prior_std()

    def prior_log_prob(self, z: Tensor) -> Tensor:
        r"""Per-sample :math:`\log p_T(z)`, summed over all but the first dimension."""
        check_float_tensor("z", z)
        if z.dim() < 1:
            raise ArgumentError(f"z must have a batch dimension, got shape {tuple(z.shape)}")
        s = self._prior_std()
        d = z[0].numel()
        sq = z.flatten(1).square().sum(1) if z.dim() > 1 else z.square()
        return -0.5 * sq / s**2 - 0.5 * d * math.log(2 * math.pi * s**2)

    # ---- what needs a closed-form kernel -------------------------------------------------
    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r""":math:`(\alpha_t, \sigma_t)` with :math:`x_t = \alpha_t x_0 + \sigma_t n`; linear SDEs only."""
        raise NoTransitionKernelError(
            f"{type(self).__name__} has no closed-form transition kernel p(x_t | x_0): marginal() "
            "and marginal_prob() exist for linear SDEs (LinearSDEBase) only. Simulate the forward SDE "
            "(scoresde.sde.torchsde_integrate) or use sliced score matching instead."
        )

    def marginal_prob(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean and std of :math:`p(x_t | x_0)`; linear SDEs only."""
        self.marginal(t)  # raises with the explanation
        raise AssertionError("unreachable")

    # ---- discretisation and reversal ------------------------------------------------------
    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""One step of the forward chain that ends at time ``t``: :math:`x_t = x_{t-dt} + F + G z`.

        The default is Euler-Maruyama, :math:`F = f(x,t)\,dt`, :math:`G = g(x,t)\sqrt{dt}`;
        VP and VE override it with the DDPM and SMLD chains.
        """
        t = self.time(t, like=x)
        return self.drift(x, t) * dt, self.diffusion(x, t) * dt**0.5  # dt may be a tensor: no sync

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow=True``, the PF-ODE) for ``score_fn``."""
        return ReverseSDE(self, score_fn, probability_flow=probability_flow)

    def diffusion_divergence(self, x: Tensor, t: Tensor) -> Tensor:
        r""":math:`\partial_{x_i} g_i(x,t)^2`, zero unless ``state_dependent_diffusion``.

        Taken by autograd, which is switched on for it even under ``torch.no_grad()``. The
        result is differentiable in ``x`` only when the caller records gradients and ``x``
        requires them; otherwise no graph is kept, so a sampler's memory does not grow with
        its steps.
        """
        if not self.state_dependent_diffusion:
            return torch.zeros_like(x)
        keep_graph = torch.is_grad_enabled() and x.requires_grad  # read before enable_grad
        with torch.enable_grad():
            xg = x if keep_graph else x.detach().requires_grad_(True)
            g2 = torch.broadcast_to(self.diffusion(xg, t), x.shape).square()
            (grad,) = torch.autograd.grad(g2.sum(), xg, create_graph=keep_graph)
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T:g})"


def expand_to(coef: Tensor, x: Tensor, name: str = "t") -> Tensor:
    """Reshape a per-sample coefficient of shape ``batch`` so it broadcasts against ``x``.

    ``coef`` has the shape of the time tensor: scalar, or the leading dimensions of ``x``.
    """
    if coef.dim() == 0:
        return coef
    if coef.dim() > x.dim() or tuple(x.shape[: coef.dim()]) != tuple(coef.shape):
        raise ArgumentError(
            f"{name} must be a scalar or have the leading (batch) shape of x, "
            f"got {name}.shape={tuple(coef.shape)} for x.shape={tuple(x.shape)}"
        )
    return coef.reshape(coef.shape + (1,) * (x.dim() - coef.dim()))


def call_score(score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """Call ``score_fn(x, t)`` with ``t`` of shape ``(batch,)``; the output must be a tensor of
    ``x``'s shape, dtype and device (checked on metadata only: no host synchronisation).

    Every sampler, the probability flow and the likelihood call the score through here, so a
    score that silently promotes float32 to float64, or answers on another device, is caught
    at its first evaluation rather than changing the samples' dtype.
    """
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    s = score_fn(x, t)
    if not isinstance(s, Tensor):
        raise ArgumentError(f"score_fn must return a torch.Tensor of x's shape {tuple(x.shape)}, got {type(s).__name__}")
    if s.shape != x.shape:
        raise ArgumentError(f"score_fn must return a tensor of x's shape {tuple(x.shape)}, got {tuple(s.shape)}")
    if s.dtype != x.dtype or s.device != x.device:
        raise ArgumentError(
            f"score_fn must return a tensor of x's dtype and device ({x.dtype} on {x.device}), got "
            f"{s.dtype} on {s.device}; convert inside score_fn, e.g. return s.to(x)"
        )
    return s


class ReverseSDE:
    r"""The reverse-time process of a forward SDE, indexed by forward time and run from T down.

    With ``probability_flow=False`` it is the reverse SDE (Anderson 1982; Song et al. 2021, eq. 6)

    .. math:: dx = [f(x,t) - \nabla\!\cdot\! g^2 - g(x,t)^2\, s_\theta(x,t)]\,dt + g\, d\bar W,

    with ``True`` the probability-flow ODE (eq. 13)

    .. math:: \frac{dx}{dt} = f(x,t) - \tfrac12 \nabla\!\cdot\! g^2 - \tfrac12 g(x,t)^2 s_\theta(x,t),

    where the divergence term is zero unless the diffusion depends on x. Both are integrated
    with ``dt < 0``.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        if not isinstance(sde, SDE):
            raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        self.sde = sde
        self.score_fn = check_callable("score_fn", score_fn, "score_fn(x, t)")
        self.probability_flow = check_bool("probability_flow", probability_flow)
        self.T = sde.T
        self.eps = sde.eps

    @property
    def _weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        return call_score(self.score_fn, x, t)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        t = self.sde.time(t, like=x)
        g2 = torch.broadcast_to(self.sde.diffusion(x, t), x.shape).square()
        correction = g2 * self.score(x, t) + self.sde.diffusion_divergence(x, t)
        return self.sde.drift(x, t) - self._weight * correction

    def diffusion(self, x: Tensor, t: Tensor) -> Tensor:
        g = self.sde.diffusion(x, t)
        return torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""Reverse of :meth:`SDE.discretize`: :math:`x_{t-dt} = x_t - F_{rev} + G_{rev} z` with

        .. math:: F_{rev} = F - w\,\big(G^2 s_\theta(x_t, t) + \nabla\!\cdot g^2\,dt\big),\qquad
                  G_{rev} = G\ (0 \text{ for the PF-ODE}),

        :math:`w = 1` (reverse SDE) or :math:`\tfrac12` (PF-ODE): the drift of :meth:`drift` over one
        step of the forward chain, whose noise :math:`G^2` stands for :math:`g^2 dt`. The divergence
        term is zero unless the diffusion depends on x; without it a state-dependent diffusion's
        reverse chain has the wrong stationary law.
        """
        t = self.sde.time(t, like=x)
        f, G = self.sde.discretize(x, t, dt)
        correction = torch.broadcast_to(G, x.shape).square() * self.score(x, t)
        if self.sde.state_dependent_diffusion:
            correction = correction + self.sde.diffusion_divergence(x, t) * dt
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return f - self._weight * correction, rev_G
