r"""Exact log-likelihoods through the probability-flow ODE.

Instantaneous change of variables (Chen et al. 2018; Song et al. 2021, eq. 39): along the
PF-ODE :math:`\dot x_t = v(x_t, t) = f(x_t,t) - \tfrac12 g(t)^2 s_\theta(x_t,t)` the density
of the flow obeys :math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\!\cdot v(x_t, t)`, so

.. math::
    \log p_\varepsilon(x) = \log p_T(x_T) + \int_\varepsilon^T \nabla\!\cdot v(x_t, t)\,dt,
    \qquad x_\varepsilon = x .

The ODE state is :math:`(x_t, \int_\varepsilon^t \nabla\!\cdot v)`, integrated by torchdiffeq
from :math:`\varepsilon` to :math:`T`. The divergence is exact (``trace="exact"``, ``D``
vector-Jacobian products per evaluation) or the Skilling-Hutchinson estimate with probes
drawn once and held for the whole solve, so that the integrand is a smooth function of ``t``
(``trace="hutchinson"``); see :mod:`scoresde.likelihood.divergence`.

Two errors remain: the solver's (controlled by ``rtol``/``atol``) and the prior mismatch
:math:`\log\pi(x_T) - \log p_T(x_T)` when the prior :math:`\pi` is not the true
:math:`p_T` (on average :math:`-\mathrm{KL}(p_T\,\|\,\pi)`, see docs/likelihood.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import (
    DEFAULT_MAX_STEPS,
    ArgumentError,
    NonFiniteError,
    check_batch,
    check_callable,
    check_choice,
    check_eps,
    check_int,
    check_interval,
    check_optional_int,
    check_tolerance,
)
from ..flow import check_adaptive_method, check_flow_sde, reporting_score_failures, solve
from ..sde import SDE, ScoreFn
from .augmented import TRACE_TYPES, AugmentedFlow
from .divergence import NOISE_TYPES, check_score_differentiable, draw_probes


def nats_to_bits_per_dim(
    log_p: Tensor, dims: int, num_bins: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    r"""Bits per dimension of a log-density ``log_p`` (nats) over ``dims`` dimensions.

    Continuous data (``num_bins=None``): :math:`\mathrm{bpd} = -\log p(x) / (D\ln 2)`.

    Discrete data with ``num_bins`` levels mapped (after uniform dequantisation) onto
    ``data_range`` = ``(lo, hi)``, so that each bin has width :math:`\Delta = (hi-lo)/\text{num\_bins}`
    in model space: the density in bin units is :math:`p(x)\,\Delta^D` (the log-determinant
    of the data scaling), hence

    .. math:: \mathrm{bpd} = -\frac{\log p(x) + D\ln\Delta}{D\ln 2}
              = -\frac{\log p(x)}{D\ln 2} - \log_2\Delta ,

    e.g. :math:`-\log_2(2/256) = 7` bits for 8-bit data on [-1, 1]. Averaged over the
    dequantisation noise this is an upper bound on the discrete model's bits/dim.
    """
    if num_bins is None:
        log_width = 0.0
    else:
        num_bins = check_int("num_bins", num_bins)
        lo, hi = check_interval("data_range", data_range)
        log_width = math.log((hi - lo) / num_bins)
    return -(log_p + dims * log_width) / (dims * math.log(2))


def checked_prior_log_prob(prior_log_prob: Callable[[Tensor], Tensor], z: Tensor, *, finite: bool = True) -> Tensor:
    """``prior_log_prob(z)``, checked: a real tensor of shape ``(batch,)`` on ``z``'s device, and
    (``finite=True``, one host read) never NaN or +inf; -inf, a zero prior density, is a valid answer."""
    lp = prior_log_prob(z)
    batch = z.shape[0]
    if not isinstance(lp, Tensor) or lp.shape != (batch,) or not lp.is_floating_point():
        got = f"shape {tuple(lp.shape)}, dtype {lp.dtype}" if isinstance(lp, Tensor) else type(lp).__name__
        raise ArgumentError(f"prior_log_prob must return a floating tensor of shape ({batch},), got {got}")
    if lp.device != z.device:
        raise ArgumentError(f"prior_log_prob must return a tensor on {z.device}, got one on {lp.device}")
    bad = torch.isnan(lp) | (lp == math.inf)
    if finite and bool(bad.any()):
        raise NonFiniteError(
            f"prior_log_prob returned NaN or +inf for {int(bad.sum())} of {batch} latents "
            f"(the first at batch index {int(bad.nonzero()[0, 0])})"
        )
    return lp


@dataclass(frozen=True)
class LikelihoodResult:
    """What :func:`log_likelihood` returns.

    Attributes:
        log_p: :math:`\\log p_\\varepsilon(x)` in nats, shape ``(batch,)``.
        z: the latent :math:`x_T`, shape of ``x``.
        prior_log_p: :math:`\\log \\pi(z)`, shape ``(batch,)``.
        delta_log_p: :math:`\\int_\\varepsilon^T \\nabla\\cdot v\\,dt`, shape ``(batch,)``;
            ``log_p = prior_log_p + delta_log_p``.
        nfe: (batched) calls of ``score_fn``, each with its vector-Jacobian products: one per
            evaluation of the ODE right-hand side, plus one that checks that the score is
            differentiable in ``x``.
        dims: the number of dimensions per sample, :math:`D`.
    """

    log_p: Tensor
    z: Tensor
    prior_log_p: Tensor
    delta_log_p: Tensor
    nfe: int
    dims: int

    def bits_per_dim(self, num_bins: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
        """Per-sample bits/dim, shape ``(batch,)``; see :func:`nats_to_bits_per_dim` for the formula.

        Pass ``num_bins`` (e.g. 256) when ``x`` is dequantised discrete data scaled onto
        ``data_range``; leave it None for continuous data.
        """
        return nats_to_bits_per_dim(self.log_p, self.dims, num_bins, data_range)


def log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    trace: str = "exact",
    noise: str = "rademacher",
    probes: int = 1,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: bool = False,
) -> LikelihoodResult:
    r"""Log-likelihood of ``x`` under the model defined by ``score_fn`` and ``sde`` (PF-ODE).

    Args:
        score_fn: ``score_fn(x, t) -> Tensor`` of ``x``'s shape, ``t`` of shape ``(batch,)``.
        sde: any :class:`~scoresde.SDE` whose diffusion depends on ``t`` only (every
            linear SDE, :class:`~scoresde.LinearSDEBase`, and custom drifts).
        x: data, shape ``(batch, *dims)``, float32 or float64, on any device.
        trace: ``"exact"`` (full Jacobian trace, ``D`` vector-Jacobian products per step;
            practical to a few hundred dimensions on a CPU) or ``"hutchinson"`` (unbiased).
        noise: Hutchinson probe distribution, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        probes: Hutchinson probes per sample, averaged; drawn once, fixed for the whole solve.
        method: adaptive torchdiffeq method.
        rtol, atol: solver tolerances (on both ``x_t`` and the divergence integral).
        eps: start time; default ``sde.eps``. ``log_p`` is the density of :math:`p_\varepsilon`.
        prior_log_prob: ``z -> (batch,)`` log-density replacing ``sde.prior_log_prob``
            (e.g. an exact :math:`\log p_T`, leaving only the solver's error).
        generator: source of the Hutchinson probes (same generator state, same result).
        chunk_size: basis directions (exact) or probes (Hutchinson) pushed through each
            batched backward pass; bounds memory at about ``chunk_size * batch * D`` numbers.
        max_steps: solver step budget; exceeding it raises :class:`~scoresde.errors.ODESolveError`
            with the time reached (a NaN/inf drift raises :class:`~scoresde.errors.NonFiniteError`).
        progress: show a tqdm bar over ``t`` (reads ``t`` on the host at every evaluation).

    Returns:
        :class:`LikelihoodResult` with ``log_p = prior_log_p + delta_log_p`` in nats.
    """
    sde = check_flow_sde(sde)
    check_callable("score_fn", score_fn, "score_fn(x, t)")
    check_batch("x", x)
    check_choice("trace", trace, TRACE_TYPES)
    check_choice("noise", noise, NOISE_TYPES)
    probes = check_int("probes", probes)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    chunk_size = check_optional_int("chunk_size", chunk_size)
    max_steps = check_int("max_steps", max_steps)
    check_adaptive_method(method)
    eps = check_eps(sde.eps if eps is None else eps, sde.T)
    if prior_log_prob is not None:
        check_callable("prior_log_prob", prior_log_prob, "z -> (batch,)")

    batch, dims = x.shape[0], x[0].numel()
    eps_probes = None
    if trace == "hutchinson":
        eps_probes = draw_probes(x, probes, noise, generator)
    with reporting_score_failures(x.shape):
        check_score_differentiable(score_fn, x, torch.full((1,), eps, dtype=x.dtype, device=x.device))
    system = AugmentedFlow(score_fn, sde, trace=trace, probes=eps_probes, chunk_size=chunk_size)
    state = (x, x.new_zeros(batch))
    with torch.no_grad():
        z, delta = solve(
            system, state, [eps, sde.T], like=x, method=method, rtol=rtol,
            atol=atol, max_steps=max_steps, progress=progress, desc="log-likelihood",
        ).final
        prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
        prior_lp = checked_prior_log_prob(prior, z)
    return LikelihoodResult(
        log_p=prior_lp + delta,
        z=z,
        prior_log_p=prior_lp,
        delta_log_p=delta,
        nfe=system.nfe + 1,  # + the differentiability check
        dims=dims,
    )
