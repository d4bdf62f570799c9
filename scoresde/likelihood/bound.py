r"""Variational upper bound on the negative log-likelihood of the *SDE* model.

The SDE model draws :math:`x_T \sim \pi` and runs the reverse SDE with the learned score
:math:`s_\theta` down to time 0; its density :math:`p^{SDE}_\theta` differs from the PF-ODE's
:math:`p^{ODE}_\theta` unless :math:`s_\theta` is exact. For a linear SDE
:math:`dx = f(t)x\,dt + g(t)\,dW` with :math:`x_t = \alpha_t x + \sigma_t n` (Song, Durkan,
Murray & Ermon 2021, Theorem 2 in denoising form):

.. math::
    -\log p^{SDE}_\theta(x) \le \mathcal B_\theta(x) =
    -\mathbb E_n\log\pi(x_T)
    + \tfrac12\int_\varepsilon^T \frac{g(t)^2}{\sigma_t^2}\,
      \mathbb E_n\big[\|\sigma_t s_\theta(x_t,t) + n\|^2 - \|n\|^2\big]\,dt
    - D\int_\varepsilon^T f(t)\,dt .

The last term is :math:`-\tfrac12\int 2\nabla\!\cdot f`, i.e. :math:`D\log(\alpha_\varepsilon/\alpha_T)`.
The bound is tight for the exact score and the exact :math:`p_T` as prior
(:math:`\mathcal B = -\log p_0(x)` per point, up to the :math:`[0,\varepsilon]` piece, whose
integrand vanishes like :math:`\sigma_t^2`), and averaged over the data its excess is the
likelihood-weighted score error,

.. math::
    \mathbb E_{x\sim p_0}\mathcal B_\theta(x) - H(p_0)
    = \tfrac12\int_\varepsilon^T g(t)^2\,\mathbb E_{p_t}\|s_\theta - \nabla\log p_t\|^2\,dt
      + \mathrm{KL}(p_T\,\|\,\pi),

which is exactly what the likelihood-weighted DSM loss minimises (:class:`~scoresde.DSMLoss`).

**Estimator.** Since :math:`\frac{d}{dt}\log(\sigma_t^2/\alpha_t^2) = g^2/\sigma^2`, the time
integral is taken over the log-SNR :math:`\lambda`, with :math:`dt\,g^2/\sigma^2 = -2\,d\lambda`:
each point gets ``samples`` stratified log-SNR draws (one uniform offset per point, one draw per
stratum of :math:`[\lambda_T, \lambda_\varepsilon]`) and independent Gaussian noise. The prior
term uses the same number of draws of :math:`x_T`. ``stderr`` treats the draws as independent,
which overstates the error of the stratified estimate (a conservative error bar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ArgumentError, NonFiniteError, check_batch, check_callable, check_eps, check_int
from ..sde import SDE, LinearSDEBase, ScoreFn, call_score
from .core import checked_prior_log_prob, nats_to_bits_per_dim


@dataclass(frozen=True)
class NLLBound:
    """What :func:`nll_bound` returns.

    Attributes:
        nll: the upper bound :math:`\\mathcal B_\\theta(x)` on :math:`-\\log p^{SDE}_\\theta(x)` in
            nats, shape ``(batch,)`` (a Monte-Carlo estimate).
        stderr: its per-point standard error, shape ``(batch,)`` (conservative, see the module).
        samples: Monte-Carlo draws per point.
        dims: the number of dimensions per sample, :math:`D`.
    """

    nll: Tensor
    stderr: Tensor
    samples: int
    dims: int

    def bits_per_dim(self, num_bins: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
        """Per-sample bits/dim of the bound; see :func:`~scoresde.likelihood.nats_to_bits_per_dim`."""
        return nats_to_bits_per_dim(-self.nll, self.dims, num_bins, data_range)


def nll_bound(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    samples: int = 256,
    eps: float | None = None,
    prior_log_prob=None,
    generator: torch.Generator | None = None,
    chunk_size: int = 64,
) -> NLLBound:
    r"""Upper bound on :math:`-\log p^{SDE}_\theta(x)` of the reverse-SDE model (see the module).

    Args:
        score_fn: ``score_fn(x, t) -> Tensor`` of ``x``'s shape, ``t`` of shape ``(batch,)``.
        sde: a linear SDE, :class:`~scoresde.LinearSDEBase` (the bound needs the kernel :math:`p(x_t\mid x)`).
        x: data, shape ``(batch, *dims)``, float32 or float64, on any device.
        samples: Monte-Carlo draws per point (time-and-noise pairs, and prior draws).
        eps: lower end of the time integral, ``> 0``; default ``sde.eps``.
        prior_log_prob: ``z -> (batch,)`` log-density of the model's prior
            (default ``sde.prior_log_prob``).
        generator: source of the draws (same generator state, same result).
        chunk_size: draws per point pushed through ``score_fn`` at once (memory about
            ``chunk_size * batch * D`` numbers).

    Returns:
        :class:`NLLBound` with the per-point bound in nats and its standard error.
    """
    if not isinstance(sde, LinearSDEBase):
        raise ArgumentError(
            f"sde must be a LinearSDEBase (a linear SDE: the bound needs the Gaussian kernel p(x_t | x)), got {type(sde).__name__}"
        )
    check_callable("score_fn", score_fn, "score_fn(x, t)")
    check_batch("x", x)
    samples = check_int("samples", samples)
    chunk_size = check_int("chunk_size", chunk_size)
    eps = check_eps(sde.eps if eps is None else eps, sde.T)
    if prior_log_prob is None:
        prior_log_prob = sde.prior_log_prob
    else:
        check_callable("prior_log_prob", prior_log_prob, "z -> (batch,)")

    b, dims, shape = x.shape[0], x[0].numel(), x.shape[1:]
    kw = dict(device=x.device, dtype=x.dtype)
    alpha_ends, sigma_ends = sde.marginal(torch.tensor([eps, sde.T], **kw))
    lam_eps, lam_T = (alpha_ends.log() - sigma_ends.log()).unbind()  # log-SNR at eps and T
    z_weight = 2.0 * (lam_eps - lam_T)  # integral of g^2 / sigma^2 over [eps, T]
    drift_term = dims * (alpha_ends[0].log() - alpha_ends[1].log())  # -D * int f dt
    alpha_T, sigma_T = alpha_ends[1], sigma_ends[1]
    offset = torch.rand(b, 1, generator=generator, **kw)

    total = torch.zeros(b, **kw)
    total_sq = torch.zeros(b, **kw)
    # the first time at which the score was not finite (inf: never), and whether the prior was:
    # device flags, read once at the end
    score_bad_t = torch.full((), math.inf, **kw)
    prior_bad = torch.zeros((), dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for start in range(0, samples, chunk_size):
            k = torch.arange(start, min(start + chunk_size, samples), **kw)
            c = k.numel()
            # one stratum of [lam_T, lam_eps] per draw, the offset shared by a point's draws
            lam_draw = lam_T + (k + offset) / samples * (lam_eps - lam_T)  # (b, c)
            t = sde.t_from_log_snr(lam_draw).clamp(eps, sde.T)
            alpha, sigma = (v.reshape(b, c, *[1] * len(shape)) for v in sde.marginal(t))
            n = torch.randn((b, c, *shape), generator=generator, **kw)
            xt = alpha * x.unsqueeze(1) + sigma * n
            s = call_score(score_fn, xt.flatten(0, 1), t.flatten()).reshape(b, c, *shape)
            finite = torch.isfinite(s).flatten(2).all(2)
            score_bad_t = torch.minimum(score_bad_t, torch.where(finite, math.inf, t).min())
            score_part = 0.5 * z_weight * ((sigma * s + n).square() - n.square()).flatten(2).sum(2)
            m = torch.randn((b, c, *shape), generator=generator, **kw)
            x_T = (alpha_T * x.unsqueeze(1) + sigma_T * m).flatten(0, 1)
            prior_lp = checked_prior_log_prob(prior_log_prob, x_T, finite=False)
            prior_bad = prior_bad | (torch.isnan(prior_lp) | (prior_lp == math.inf)).any()
            prior_part = -prior_lp.reshape(b, c)
            value = score_part + prior_part
            total = total + value.sum(1)
            total_sq = total_sq + value.square().sum(1)
    if bool(torch.isfinite(score_bad_t)):
        raise NonFiniteError(f"score_fn returned NaN or inf at t={float(score_bad_t):.6g} (nll_bound)")
    if bool(prior_bad):
        raise NonFiniteError("prior_log_prob returned NaN or +inf on draws of x_T (nll_bound)")
    mean = total / samples
    var = (total_sq / samples - mean.square()).clamp_min(0) * samples / max(samples - 1, 1)
    return NLLBound(nll=mean + drift_term, stderr=(var / samples).sqrt(), samples=samples, dims=dims)
