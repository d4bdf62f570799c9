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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from scipy.stats import chi2
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
    check_positive,
    check_tolerance,
)
from ..flow import check_adaptive_method, check_flow_sde, reporting_score_failures, solve
from ..sde import SDE, ScoreFn
from .augmented import STOCHASTIC_TRACES, TRACE_TYPES, AugmentedFlow
from .divergence import (
    EXACT_METHODS,
    NOISE_TYPES,
    Batching,
    ExactMethod,
    check_score_differentiable,
    draw_probes,
)
from .frame import ScaledFrameSDE, check_frame, scaled_score


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
            differentiable in ``x``. (With ``exact_method="auto"`` the first evaluation also runs
            the other candidate methods once, partly; it counts as one, and their time is in the
            wall time: ``exact_method.seconds``.)
        dims: the number of dimensions per sample, :math:`D`.
        standard_error: Hutchinson with two or more probes per sample: each sample's standard error
            of ``log_p`` (nats, shape ``(batch,)``) from the spread of its probes' integrals,
            :math:`\\hat s/\\sqrt{k}` with :math:`\\hat s` their sample standard deviation; None for the
            exact trace (no estimator noise) and for one probe (no spread to estimate it from).
        probes: Hutchinson: the probes each sample's estimate averages, shape ``(batch,)`` (more where
            ``target_se`` asked for them; Hutch++: its residual probes); None for the exact trace.
        exact_method: the exact trace: how its ``D`` products were taken in this solve, an
            :class:`~scoresde.likelihood.ExactMethod` (``str()`` gives e.g. ``"vmap:8"``;
            with ``exact_method="auto"`` its ``seconds`` hold each candidate's measured time per
            evaluation); None for the stochastic traces.
    """

    log_p: Tensor
    z: Tensor
    prior_log_p: Tensor
    delta_log_p: Tensor
    nfe: int
    dims: int
    standard_error: Tensor | None = None
    probes: Tensor | None = None
    exact_method: ExactMethod | None = None

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
    exact_method: str = "auto",
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: bool = False,
    target_se: float | None = None,
    max_probes: int = 256,
    frame: str = "data",
) -> LikelihoodResult:
    r"""Log-likelihood of ``x`` under the model defined by ``score_fn`` and ``sde`` (PF-ODE).

    Args:
        score_fn: ``score_fn(x, t) -> Tensor`` of ``x``'s shape, ``t`` of shape ``(batch,)``.
        sde: any :class:`~scoresde.SDE` whose diffusion depends on ``t`` only (every
            linear SDE, :class:`~scoresde.LinearSDEBase`, and custom drifts).
        x: data, shape ``(batch, *dims)``, float32 or float64, on any device.
        trace: ``"exact"`` (full Jacobian trace, ``D`` vector-Jacobian products per step;
            practical to a few hundred dimensions on a CPU), ``"hutchinson"`` (unbiased) or
            ``"hutch++"`` (unbiased, Hutchinson on the complement of a sketched subspace whose
            part of the trace is exact: :func:`~scoresde.likelihood.divergence.hutchpp_divergence`).
        noise: Hutchinson probe distribution, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        probes: Hutchinson probes per sample, averaged; drawn once, fixed for the whole solve. For
            Hutch++ the vector-Jacobian products per evaluation, at least 3: ``probes // 3`` sketch
            directions, as many for the exact part, the rest residual probes (the equal split of
            Meyer et al.).
        method: adaptive torchdiffeq method.
        rtol, atol: solver tolerances (on both ``x_t`` and the divergence integral).
        eps: start time; default ``sde.eps``. ``log_p`` is the density of :math:`p_\varepsilon`.
        prior_log_prob: ``z -> (batch,)`` log-density replacing ``sde.prior_log_prob``
            (e.g. an exact :math:`\log p_T`, leaving only the solver's error).
        generator: source of the Hutchinson probes (same generator state, same result).
        chunk_size: basis directions (exact) or probes (Hutchinson) pushed through each
            batched backward pass; bounds memory at about ``chunk_size * batch * D`` numbers.
        exact_method: how the exact trace takes its ``D`` vector-Jacobian (or Jacobian-vector)
            products: ``"auto"`` (default) measures the candidates by wall clock at the solve's first
            evaluation and keeps the fastest for the rest of it (the extra candidates cost about one
            to a few evaluations' time, once; on CUDA the device is synchronised then, never
            afterwards), or one of ``"vmap"`` (batched reverse mode), ``"forward"`` (batched forward
            mode), ``"loop"`` (``D`` plain backward passes) and ``"replicate"`` (stacked copies, for
            networks functorch cannot batch) to fix it; ``chunk_size`` applies to the batched ones.
            See :func:`~scoresde.likelihood.divergence.exact_divergence`; the result's
            ``exact_method`` says what was used.
        max_steps: solver step budget; exceeding it raises :class:`~scoresde.errors.ODESolveError`
            with the time reached (a NaN/inf drift raises :class:`~scoresde.errors.NonFiniteError`).
        progress: show a tqdm bar over ``t`` (reads ``t`` on the host at every evaluation).
        target_se: Hutchinson only: probes enough that every sample's standard error is at most this
            many nats with 90% confidence (Stein's two-stage procedure): the
            first solve's ``probes`` (at least 2) size each sample's need from the upper
            confidence bound of its standard error; the samples that need more are solved again,
            alone, with that many fresh probes, which give their estimate and standard error. A
            sample that would need more than ``max_probes`` gets that many, with a warning.
        max_probes: the most probes per sample that ``target_se`` may use.
        frame: the variables the ODE is solved in: ``"data"`` (default; :math:`x` in :math:`t`, in the
            noise level on a VE SDE) or ``"scaled"`` (a linear SDE only: EDM's :math:`x/\alpha_t` in
            :math:`\sigma_t/\alpha_t`, :class:`~scoresde.likelihood.ScaledFrameSDE`). The same log-likelihood
            to the solver's tolerance; the evaluations it takes differ (on VP, the scaled frame took
            1.8x fewer for a random-weight U-Net and up to 1.3x more for the exact scores of
            Gaussian mixtures at equal accuracy, benchmarks/RESULTS.md). Identical on VE.

    Returns:
        :class:`LikelihoodResult` with ``log_p = prior_log_p + delta_log_p`` in nats, and with two
        or more probes each sample's ``standard_error``.

    **Standard errors.** With ``k >= 2`` probes the state carries one divergence integral per
    probe, :math:`I_j = \int \epsilon_j^\top J_v\,\epsilon_j\,dt`; they are independent unbiased
    estimates of the same integral (given the path), so their mean is the estimate and
    :math:`\hat s/\sqrt k` its standard error. The solver's own error is not in it (it is controlled
    by ``rtol``/``atol``, and is the same for every probe).
    """
    sde = check_flow_sde(sde)
    check_callable("score_fn", score_fn, "score_fn(x, t)")
    check_batch("x", x)
    check_choice("trace", trace, TRACE_TYPES)
    check_choice("noise", noise, NOISE_TYPES)
    probes = check_int("probes", probes)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    chunk_size = check_optional_int("chunk_size", chunk_size)
    check_choice("exact_method", exact_method, EXACT_METHODS)
    if exact_method != "auto" and trace != "exact":
        raise ArgumentError(f"exact_method={exact_method!r} applies to trace='exact' only, got trace={trace!r}")
    max_steps = check_int("max_steps", max_steps)
    check_adaptive_method(method)
    eps = check_eps(sde.eps if eps is None else eps, sde.T)
    if prior_log_prob is not None:
        check_callable("prior_log_prob", prior_log_prob, "z -> (batch,)")
    check_frame(frame, sde)
    if frame == "scaled" and not sde.alpha_is_one:
        return _in_scaled_frame(
            score_fn, sde, x, eps=eps, prior_log_prob=prior_log_prob, trace=trace, noise=noise, probes=probes,
            method=method, rtol=rtol, atol=atol, generator=generator, chunk_size=chunk_size,
            exact_method=exact_method, max_steps=max_steps, progress=progress, target_se=target_se,
            max_probes=max_probes)

    if trace == "hutch++":
        if probes < 3:
            raise ArgumentError(f"trace='hutch++' needs probes >= 3 (a third sketch, a third exact part, a third "
                                f"residual probes), got probes={probes}")
        sketch_size = min(probes // 3, x[0].numel())
        residual = probes - 2 * sketch_size
    else:
        sketch_size, residual = 0, probes
    if target_se is not None:
        target_se = check_positive("target_se", target_se)
        if trace not in STOCHASTIC_TRACES:
            raise ArgumentError(f"target_se needs trace='hutchinson' or 'hutch++' (the exact trace has no estimator "
                                f"noise), got {trace!r}")
        if residual < 2:
            raise ArgumentError(f"target_se needs two or more (residual) probes to estimate each sample's spread, got "
                                f"probes={probes}")
    max_probes = check_int("max_probes", max_probes, minimum=residual)

    batch, dims = x.shape[0], x[0].numel()
    with reporting_score_failures(x.shape):
        check_score_differentiable(score_fn, x, torch.full((1,), eps, dtype=x.dtype, device=x.device))
    nfe = 1  # the differentiability check
    used: list[ExactMethod | None] = [None]

    def integrate(points: Tensor, eps_probes: Tensor | None) -> tuple[Tensor, Tensor]:
        """One solve from eps to T: (z, the divergence integral, per probe when there are several)."""
        nonlocal nfe
        system = AugmentedFlow(score_fn, sde, trace=trace, probes=eps_probes, chunk_size=chunk_size)
        system.batching = Batching("auto", exact_method)  # one decision per solve, shared by its evaluations
        if system.per_probe:  # one integral per (residual) probe
            zeros = points.new_zeros(points.shape[0], (eps_probes[1] if trace == "hutch++" else eps_probes).shape[0])
        else:
            zeros = points.new_zeros(points.shape[0])
        with torch.no_grad():
            out = solve(system, (points, zeros), [eps, sde.T], like=points, method=method, rtol=rtol,
                        atol=atol, max_steps=max_steps, progress=progress, desc="log-likelihood").final
        nfe += system.nfe
        used[0] = system.batching.exact
        return out

    def draw(points: Tensor, k: int):
        """k (residual) probes for ``points``; for Hutch++ with a fresh sketch."""
        if trace == "hutch++":
            return draw_probes(points, sketch_size, noise, generator), draw_probes(points, k, noise, generator)
        return draw_probes(points, k, noise, generator)

    if trace == "exact":
        z, delta = integrate(x, None)
        se = counts = None
    else:
        z, forms = integrate(x, draw(x, residual))
        if residual == 1:
            delta, se, counts = forms, None, torch.ones(batch, dtype=torch.long, device=x.device)
        else:
            delta, se, counts = _refine(forms, lambda idx, k: integrate(x[idx], draw(x[idx], k))[1], target_se, max_probes)
    with torch.no_grad():
        prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
        prior_lp = checked_prior_log_prob(prior, z)
    return LikelihoodResult(
        log_p=prior_lp + delta,
        z=z,
        prior_log_p=prior_lp,
        delta_log_p=delta,
        nfe=nfe,
        dims=dims,
        standard_error=se,
        probes=counts,
        exact_method=used[0] if trace == "exact" else None,
    )


def _in_scaled_frame(score_fn: ScoreFn, sde, x: Tensor, *, eps: float, prior_log_prob, **options) -> LikelihoodResult:
    r""":func:`log_likelihood` of a linear SDE solved in its scaled frame, mapped back: the solve is of
    :math:`\hat x = x/\alpha_t` under :class:`~scoresde.likelihood.frame.ScaledFrameSDE`, and
    :math:`\log p(x) = \log\hat p(\hat x) - D\log\alpha_\varepsilon`, :math:`z = \alpha_T\hat z`."""
    dims = x[0].numel()
    alpha_eps, alpha_T = (sde.marginal(torch.tensor(float(t), dtype=x.dtype, device=x.device))[0] for t in (eps, sde.T))
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob

    def prior_hat(z_hat: Tensor) -> Tensor:  # the density of z_hat = z / alpha_T
        return checked_prior_log_prob(prior, alpha_T * z_hat) + dims * torch.log(alpha_T)

    hat = log_likelihood(scaled_score(score_fn, sde), ScaledFrameSDE(sde), x / alpha_eps, eps=eps,
                         prior_log_prob=prior_hat, **options)
    log_p = hat.log_p - dims * torch.log(alpha_eps)
    prior_lp = hat.prior_log_p - dims * torch.log(alpha_T)
    return replace(hat, log_p=log_p, z=alpha_T * hat.z, prior_log_p=prior_lp, delta_log_p=log_p - prior_lp)


def _mean_and_se(forms: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean and standard error of the mean of ``forms`` (batch, k), k >= 2."""
    return forms.mean(1), forms.std(1) / math.sqrt(forms.shape[1])


def _refine(forms: Tensor, more: Callable[[Tensor, int], Tensor], target_se: float | None,
            max_probes: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-sample estimate, standard error and probe count from the first solve's probe integrals
    ``forms`` (batch, k); with ``target_se``, Stein's two-stage procedure for the samples that need
    more (``more(indices, m) -> (len(indices), m)`` integrals of m fresh probes).

    Stage one sizes: sample i needs :math:`N_i = \max(k, k\,(u_i/\text{target})^2)` probes, :math:`u_i`
    the 90% upper confidence bound of its standard error (chi-square with k - 1 degrees of freedom).
    Stage two draws :math:`N_i` fresh probes for every sample (rounded up to a power of two, one
    solve per size) and reports their mean and standard error alone: the sizing read the first
    probes, so reusing them would understate exactly the errors of the samples whose first probes
    happened to agree (measured: 8-D mixture, 4 Rademacher probes, errors 2-4x the reported
    standard errors for the samples kept on their first probes).
    """
    dtype, batch, k = forms.dtype, forms.shape[0], forms.shape[1]
    mean, se = (v.double() for v in _mean_and_se(forms.double()))
    counts = torch.full((batch,), k, dtype=torch.long, device=forms.device)
    if target_se is None:
        return mean.to(dtype), se.to(dtype), counts
    upper = se * math.sqrt((k - 1) / chi2.ppf(0.1, k - 1))
    need = (k * (upper / target_se).square()).ceil().clamp(max=max_probes).cpu()  # a host read between solves
    # every sample takes stage two, at least k fresh probes: a sample kept on its first probes
    # would report their spread, which is small exactly when they happened to agree
    size = (2.0 ** need.clamp(min=k).log2().ceil()).clamp(max=max_probes).long()
    for m in sorted(set(size.tolist())):
        idx = (size == m).nonzero().flatten().to(forms.device)
        g = more(idx, m).double().reshape(len(idx), m)  # one probe comes back as (batch,)
        mean[idx], se[idx] = _mean_and_se(g)
        counts[idx] = m
    short = need >= max_probes
    if bool(short.any()):
        warnings.warn(f"log_likelihood: {int(short.sum())} of {batch} samples need more than max_probes={max_probes} "
                      f"probes for a standard error below target_se={target_se:g} (at 90% confidence); their "
                      f"standard errors are up to {float(se.max()):.3g} nats: raise max_probes or loosen target_se",
                      stacklevel=3)
    return mean.to(dtype), se.to(dtype), counts
