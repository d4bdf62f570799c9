r"""A Gaussian mixture with diagonal components: exact :math:`p_t` and score under any linear SDE.

If :math:`x_0 \sim \sum_k w_k\,\mathcal N(\mu_k, \mathrm{diag}(s_k^2))` and
:math:`x_t = \alpha_t x_0 + \sigma_t n`, then

.. math::
    p_t(x) = \sum_k w_k\,\mathcal N\big(x;\ \alpha_t\mu_k,\ \mathrm{diag}(\alpha_t^2 s_k^2 + \sigma_t^2)\big),
    \qquad
    \nabla_x\log p_t(x) = \sum_k r_k(x)\,\frac{\alpha_t\mu_k - x}{\alpha_t^2 s_k^2 + \sigma_t^2},

with responsibilities :math:`r_k(x) = w_k\mathcal N_k(x) / p_t(x)`. Everything here is closed
form (no autograd, no data-dependent control flow), so it composes with ``torch.func``
transforms and ``torch.compile``; it is the project's ground truth for samplers and likelihoods.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ArgumentError, check_dtype, check_float_tensor, check_int, check_labels
from ..sde import SDE, LinearSDEBase


def _as_float_tensor(name: str, value, dtype: torch.dtype, device) -> Tensor:
    """``value`` (a tensor, number or nested sequence of numbers) as a tensor of ``dtype``."""
    if isinstance(value, (str, bytes)):
        raise ArgumentError(f"{name} must be a tensor or a sequence of numbers, got {value!r}")
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"{name} must be a tensor or a sequence of numbers, got {value!r:.80}") from None


def _require_linear(sde: SDE) -> LinearSDEBase:
    if not isinstance(sde, LinearSDEBase):
        raise ArgumentError(
            f"sde must be a LinearSDEBase (a linear SDE: the mixture's p_t is exact only under a closed-form "
            f"Gaussian kernel), got {type(sde).__name__}"
        )
    return sde


class GaussianMixture:
    r"""Mixture :math:`\sum_k w_k\,\mathcal N(\mu_k, \mathrm{diag}(s_k^2))` in :math:`\mathbb R^D`.

    Args:
        means: component means, shape ``(K, D)``.
        stds: component stds: a number, shape ``(K,)`` (isotropic) or ``(K, D)`` (diagonal).
        weights: positive mixture weights, shape ``(K,)``, normalised to sum to 1
            (default: equal).
        dtype, device: where the parameters live; default from ``means`` (float tensors), else
            float64 on the CPU. Inputs of another dtype/device are served by cached copies.
    """

    def __init__(self, means, stds=1.0, weights=None, *, dtype=None, device=None):
        if dtype is None:
            dtype = means.dtype if isinstance(means, Tensor) and means.is_floating_point() else torch.float64
        check_dtype("dtype", dtype)
        means = _as_float_tensor("means", means, dtype, device)
        if means.dim() != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ArgumentError(f"means must have shape (K, D) with K, D >= 1, got {tuple(means.shape)}")
        K, D = means.shape
        stds = _as_float_tensor("stds", stds, dtype, means.device)
        if stds.dim() == 0:
            stds = stds.expand(K, D)
        elif stds.shape == (K,):
            stds = stds[:, None].expand(K, D)
        elif stds.shape != (K, D):
            raise ArgumentError(f"stds must be a number, shape ({K},) or ({K}, {D}), got {tuple(stds.shape)}")
        if not bool((stds > 0).all()) or not bool(torch.isfinite(stds).all()):
            raise ArgumentError(f"stds must be positive and finite, got {stds.tolist()}")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=dtype, device=means.device)
        weights = _as_float_tensor("weights", weights, dtype, means.device)
        if weights.shape != (K,):
            raise ArgumentError(f"weights must have shape ({K},), got {tuple(weights.shape)}")
        if not bool((weights > 0).all()) or not bool(torch.isfinite(weights).all()):
            raise ArgumentError(f"weights must be positive and finite, got {weights.tolist()}")
        if not bool(torch.isfinite(means).all()):
            raise ArgumentError("means must be finite")
        self.means = means
        self.stds = stds.contiguous()
        self.weights = weights / weights.sum()
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim}, dtype={self.means.dtype})"

    def to(self, device=None, dtype=None) -> GaussianMixture:
        """A copy of the mixture with parameters on ``device`` / in ``dtype``."""
        dtype = dtype or self.means.dtype
        return GaussianMixture(
            self.means.to(device=device, dtype=dtype),
            self.stds.to(device=device, dtype=dtype),
            self.weights.to(device=device, dtype=dtype),
        )

    # ---- parameters at time t --------------------------------------------------------------
    def _params_like(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                p.to(device=x.device, dtype=x.dtype) for p in (self.means, self.stds, self.weights)
            )
        return self._cache[key]

    def _check_x(self, x: Tensor, name: str = "x") -> None:
        check_float_tensor(name, x)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ArgumentError(f"{name} must have shape (..., {self.dim}), got {tuple(x.shape)}")

    def _moments_t(self, x: Tensor, t, sde: SDE) -> tuple[Tensor, Tensor, Tensor]:
        """Component means and variances of :math:`p_t`, shaped ``(*batch, K, D)``, and log w."""
        sde = _require_linear(sde)
        t = sde.time(t, like=x)
        if t.dim() > 0 and tuple(t.shape) != tuple(x.shape[: t.dim()]):
            raise ArgumentError(
                f"t must be a scalar or have x's batch shape {tuple(x.shape[:-1])}, got {tuple(t.shape)}"
            )
        mu, s, w = self._params_like(x)
        alpha, sigma = sde.marginal(t)
        alpha = alpha.reshape(alpha.shape + (1, 1))
        sigma = sigma.reshape(sigma.shape + (1, 1))
        return alpha * mu, (alpha * s).square() + sigma.square(), w.log()

    def component_log_prob(self, x: Tensor, t, sde: SDE) -> Tensor:
        r""":math:`\log w_k + \log\mathcal N(x; \alpha_t\mu_k, v_{k,t})`, shape ``(*batch, K)``."""
        self._check_x(x)
        m, v, log_w = self._moments_t(x, t, sde)
        diff = x[..., None, :] - m
        log_norm = -0.5 * (diff.square() / v + v.log() + math.log(2 * math.pi)).sum(-1)
        return log_w + log_norm

    def log_prob(self, x: Tensor, t, sde: SDE) -> Tensor:
        r"""Exact :math:`\log p_t(x)` under ``sde``, shape ``x.shape[:-1]``."""
        return torch.logsumexp(self.component_log_prob(x, t, sde), dim=-1)

    def component_posterior(self, x: Tensor, t, sde: SDE) -> Tensor:
        r"""Responsibilities :math:`r_k(x) = p(k \mid x_t = x)`, shape ``(*batch, K)``."""
        return torch.softmax(self.component_log_prob(x, t, sde), dim=-1)

    def score(self, x: Tensor, t, sde: SDE) -> Tensor:
        r"""Exact score :math:`\nabla_x \log p_t(x)` under ``sde``, shape of ``x``."""
        self._check_x(x)
        m, v, log_w = self._moments_t(x, t, sde)
        diff = x[..., None, :] - m
        log_norm = -0.5 * (diff.square() / v + v.log()).sum(-1)
        r = torch.softmax(log_w + log_norm, dim=-1)
        return -(r[..., None] * diff / v).sum(-2)

    def score_fn(self, sde: SDE) -> Callable[[Tensor, Tensor], Tensor]:
        """A ``score_fn(x, t)`` with the exact score under ``sde`` (``t`` of shape ``(batch,)``)."""
        sde = _require_linear(sde)

        def exact_score(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, sde)

        return exact_score

    def class_score_fn(self, sde: SDE) -> Callable[..., Tensor]:
        r"""The exact class-conditional score with the components as classes: ``score_fn(x, t, y)``
        is :math:`\nabla_x\log\mathcal N(x; \alpha_t\mu_y, v_{y,t})`, the score of
        :math:`p_t(x \mid y)`, for labels ``y`` of shape ``(batch,)`` in ``[0, K)``, and
        ``score_fn(x, t)`` the mixture's :math:`\nabla_x\log p_t(x)`. It carries ``num_classes = K``,
        so ``sample(..., cond=labels, guidance=w)`` and guided distillation take it as a teacher
        (a labelled :class:`~scoresde.data.MixtureDataset` has the same labels).
        """
        sde = _require_linear(sde)
        K = self.n_components

        def exact_class_score(x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
            if y is None:
                return self.score(x, t, sde)
            self._check_x(x)
            y = check_labels("y", y, K, batch=x.shape[0]).to(x.device)
            m, v, _ = self._moments_t(x, t, sde)  # (batch or 1, K, D)
            pick = y.reshape(-1, 1, 1).expand(-1, 1, self.dim)
            m, v = (a.expand(x.shape[0], -1, -1).gather(1, pick)[:, 0] for a in (m, v))
            return -(x - m) / v

        exact_class_score.num_classes = K
        return exact_class_score

    def prior_log_prob(self, sde: SDE) -> Callable[[Tensor], Tensor]:
        r"""The exact :math:`\log p_T(z)` as a function of ``z`` (to replace the Gaussian prior)."""
        sde = _require_linear(sde)

        def exact_prior_log_prob(z: Tensor) -> Tensor:
            return self.log_prob(z, sde.T, sde)

        return exact_prior_log_prob

    # ---- moments and samples ------------------------------------------------------------------
    def mean(self, t=None, sde: SDE | None = None) -> Tensor:
        r"""Mean of :math:`p_t` (of the clean mixture when ``t`` is None), shape ``(D,)``."""
        mu, _, w = self.means, self.stds, self.weights
        alpha = 1.0 if t is None else _require_linear(sde).marginal(sde.time(t, like=mu))[0]
        return alpha * (w[:, None] * mu).sum(0)

    def covariance(self, t=None, sde: SDE | None = None) -> Tensor:
        r"""Covariance of :math:`p_t` (of the clean mixture when ``t`` is None), shape ``(D, D)``."""
        mu, s, w = self.means, self.stds, self.weights
        alpha, sigma = (1.0, 0.0) if t is None else _require_linear(sde).marginal(sde.time(t, like=mu))
        mbar = (w[:, None] * mu).sum(0)
        centred = mu - mbar
        between = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
        within = torch.diag((w[:, None] * s.square()).sum(0))
        eye = torch.eye(self.dim, dtype=mu.dtype, device=mu.device)
        return alpha**2 * (between + within) + sigma**2 * eye

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        t=None,
        sde: SDE | None = None,
        return_components: bool = False,
    ):
        r"""Draw ``n`` samples of the clean mixture, or of :math:`p_t` when ``t`` and ``sde`` are given.

        Note that under VE, :math:`p_0` is the mixture perturbed by :math:`\sigma_{min}`
        (pass ``t=0``); ``t=None`` gives the clean mixture.
        """
        n = check_int("n", n, 0)
        mu, s, w = self.means, self.stds, self.weights
        if n == 0:  # torch.multinomial refuses to draw nothing
            k = torch.zeros(0, dtype=torch.long, device=mu.device)
        else:
            k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn((n, self.dim), generator=generator, dtype=mu.dtype, device=mu.device)
        x = mu[k] + s[k] * z
        if t is not None:
            sde = _require_linear(sde) if sde is not None else None
            if sde is None:
                raise ArgumentError("sde must be given with t")
            alpha, sigma = sde.marginal(sde.time(t, like=x))
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = alpha * x + sigma * noise
        return (x, k) if return_components else x
