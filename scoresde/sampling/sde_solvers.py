r"""Discretisations of the reverse-time SDE (Song et al. 2021, eq. 6):

.. math:: dx = [f(x,t) - g(t)^2 \nabla_x\log p_t(x)]\,dt + g(t)\,d\bar W,

integrated from :math:`t_{start}` down to :math:`\varepsilon` with steps :math:`h_i = t_i - t_{i+1} > 0`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import check_choice
from ..sde import SDE, LinearSDEBase
from .base import Sampler, SolveContext, batch_time, register


@register
class EulerMaruyama(Sampler):
    r"""Euler-Maruyama on the reverse SDE (weak order 1, strong order 1/2 for additive noise):

    .. math:: x_{i+1} = x_i - h_i\,[f(x_i,t_i) - g(t_i)^2 s_\theta(x_i,t_i)] + g(t_i)\sqrt{h_i}\,z_i.

    Serves any SDE. One score evaluation per step.
    """

    name = "euler_maruyama"
    order = 1.0
    stochastic = True

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        if isinstance(ctx.sde, LinearSDEBase):
            return self._solve_linear(ctx, x, times)
        rsde = ctx.sde.reverse(ctx.score_fn)
        for i in range(len(times) - 1):
            t = batch_time(times[i], x)
            h = times[i] - times[i + 1]
            drift = rsde.drift(x, t)
            g = torch.broadcast_to(rsde.diffusion(x, t), x.shape)
            x = x - drift * h + g * h.sqrt() * ctx.noise(x)
            x = ctx.step_done(x, times[i + 1])
        return x

    def _solve_linear(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        """The same step for :math:`f(x,t) = f(t)x`, with :math:`f, g` evaluated once on the grid."""
        f, g = ctx.sde.f(times), ctx.sde.g(times)
        hs = times[:-1] - times[1:]
        for i in range(len(times) - 1):
            score = ctx.score(x, batch_time(times[i], x))
            drift = f[i] * x - g[i].square() * score
            x = x - drift * hs[i] + g[i] * hs[i].sqrt() * ctx.noise(x)
            x = ctx.step_done(x, times[i + 1])
        return x


@register
class ReverseDiffusion(Sampler):
    r"""The reverse of the SDE's own discretisation (Song et al. 2021, eq. 46): with
    :math:`x_t = x_{t-h} + F + G z` the forward chain of :meth:`SDE.discretize` (DDPM for VP,
    SMLD for VE, Euler-Maruyama otherwise),

    .. math:: x_{t-h} = x_t - F + G^2 s_\theta(x_t, t) + G z.

    Serves any SDE. One score evaluation per step; weak order 1.
    """

    name = "reverse_diffusion"
    order = 1.0
    stochastic = True

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        rsde = ctx.sde.reverse(ctx.score_fn)
        for i in range(len(times) - 1):
            t = batch_time(times[i], x)
            h = times[i] - times[i + 1]
            rev_f, rev_g = rsde.discretize(x, t, h)
            x = x - rev_f + torch.broadcast_to(rev_g, x.shape) * ctx.noise(x)
            x = ctx.step_done(x, times[i + 1])
        return x


@register
class Ancestral(Sampler):
    r"""Ancestral sampling: one step of the reverse Gaussian chain of the forward kernel.

    With :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`
    and the Tweedie estimate :math:`\hat x_0 = (x_t + \sigma_t^2 s_\theta)/\alpha_t`, the mean of
    :math:`q(x_s \mid x_t, \hat x_0)` simplifies to

    .. math:: \mu = \frac{x_t + \sigma_{t|s}^2\, s_\theta(x_t, t)}{\alpha_{t|s}},\qquad
              x_s = \mu + v^{1/2} z,

    with the variance ``variance="posterior"``: :math:`v = \sigma_{t|s}^2\sigma_s^2/\sigma_t^2` (DDPM's
    :math:`\tilde\beta`, SMLD's ancestral step on VE: exact for a point mass, too small otherwise) or
    ``variance="forward"``: :math:`v = \sigma_{t|s}^2` (DDPM's :math:`\beta`, Song et al.'s ancestral
    predictor for VP: exact for standard normal data, too large otherwise). The true reverse
    transition lies in between; both are weak order 1. Default: ``"forward"`` for an SDE with
    drift (VP, sub-VP, DiscreteVPSDE, as Song et al.), ``"posterior"`` for a drift-free one
    (``sde.alpha_is_one``: VE, as SMLD). Any linear SDE (LinearSDEBase).
    """

    name = "ancestral"
    order = 1.0
    stochastic = True
    needs_linear = True

    def __init__(self, variance: str | None = None):
        self.variance = check_choice("variance", variance, (None, "posterior", "forward"))

    def options(self) -> dict:
        return dict(variance=self.variance)

    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor) -> Tensor:
        sde: LinearSDEBase = ctx.sde
        variance = self.variance or ("posterior" if sde.alpha_is_one else "forward")
        alphas, sigmas = sde.marginal(times)
        for i in range(len(times) - 1):
            a_t, s_t, a_s, s_s = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
            score = ctx.score(x, batch_time(times[i], x))
            a_ts = a_t / a_s
            var_ts = (s_t.square() - a_ts.square() * s_s.square()).clamp_min(0)
            mean = (x + var_ts * score) / a_ts
            std = var_ts.sqrt() * (s_s / s_t if variance == "posterior" else 1.0)
            x = mean + std * ctx.noise(x)
            x = ctx.step_done(x, times[i + 1])
        return x


def langevin_alpha(sde: SDE, t: Tensor, s: Tensor) -> Tensor:
    r"""Song et al.'s :math:`\alpha_i` in the Langevin step: :math:`1-\beta_i = (\alpha_s/\alpha_t)^2`
    on a linear SDE (so 1 for VE), 1 otherwise."""
    if isinstance(sde, LinearSDEBase):
        a_t, _ = sde.marginal(t)
        a_s, _ = sde.marginal(s)
        return (a_t / a_s).square()
    return torch.ones((), dtype=t.dtype, device=t.device)


def langevin_step(ctx: SolveContext, x: Tensor, t: Tensor, snr: float, alpha: Tensor) -> Tensor:
    r"""One Langevin corrector step :math:`x \leftarrow x + \epsilon\,s_\theta(x,t) + \sqrt{2\epsilon}\,z`
    at time ``t`` with signal-to-noise ratio ``snr`` = :math:`r` and a step that is the same for
    every sample (a step that depends on the position biases Langevin dynamics: its stationary
    law is :math:`p/\epsilon(x)`, not :math:`p`):

    * on a :class:`~scoresde.sde.LinearSDEBase`, a step that depends on ``t`` only,
      :math:`\epsilon = 2\alpha r^2\sigma_t^2`: Song et al.'s
      :math:`2\alpha (r\lVert z\rVert/\lVert s\rVert)^2` with :math:`\lVert s\rVert^2` at its
      upper bound :math:`D/\sigma_t^2` (the Fisher information of :math:`p_t`, a Gaussian of
      variance :math:`\sigma_t^2` convolved with the scaled data, is at most that of the Gaussian),
      which it reaches in high dimension. Per-sample seeds keep their promise.
    * on an SDE without marginals, Song et al.'s rule with batch means (their reference code),
      :math:`\epsilon = 2\alpha r^2 D / \overline{\lVert s_\theta\rVert^2}`, the bar a mean over the
      batch: each sample's step depends on its batch-mates, so :class:`PredictorCorrector` refuses
      per-sample seeds there. The batch mean estimates :math:`E\lVert s\rVert^2`, so it needs a
      batch of more than a few samples.
    """
    score = ctx.score(x, batch_time(t, x))
    if isinstance(ctx.sde, LinearSDEBase):
        _, sigma = ctx.sde.marginal(t)
        step = 2 * alpha * snr**2 * sigma.square()
    else:
        mean_sq = score.reshape(x.shape[0], -1).square().sum(1).mean()
        step = 2 * alpha * snr**2 * x[0].numel() / mean_sq.clamp_min(torch.finfo(x.dtype).tiny)
    return x + step * score + (2 * step).sqrt() * ctx.noise(x)
