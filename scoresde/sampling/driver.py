r"""The one sampling loop: a sampler's steps on a grid, and everything around them.

:func:`run` takes a :class:`~scoresde.sampling.Sampler` and a :class:`Context` (the SDE, the
counting score, the noise, the grid) and owns what no sampler should write again:

* the loop over the grid :math:`t_0 > \dots > t_N`, calling ``sampler.init`` once and
  ``sampler.step`` per interval (or ``sampler.solve`` once for the whole-solve samplers);
* after each step: the projection (replacement inpainting), the device-side NaN/inf flag
  (:class:`~scoresde.flow.NonFiniteTracker`, read on the host every ``check_every`` steps and at
  the end, so a step never forces a host-device sync), the trajectory, the progress bar;
* the score evaluations, counted (``ctx.nfe``), and the final denoising step
  :math:`\hat x_0 = (x_\varepsilon + \sigma_\varepsilon^2 s_\theta(x_\varepsilon, \varepsilon))/\alpha_\varepsilon`.
"""

from __future__ import annotations

from torch import Tensor

from ..sde import LinearSDEBase
from .base import Sampler
from .context import Context


def run(sampler: Sampler, ctx: Context, x: Tensor, *, denoise: bool) -> Tensor:
    """Integrate ``x`` at ``ctx.times[0]`` down to ``ctx.times[-1]`` with ``sampler`` and return the
    samples (denoised when ``denoise`` and the SDE is linear)."""
    x = ctx.accept(x, 0)
    if sampler.solves_whole:
        path = sampler.solve(ctx, x)
        for k, i in enumerate(ctx.wanted[1:], start=1):
            x = ctx.accept(path[k], i, project=False)
        ctx.advance(ctx.n_steps - (len(ctx.wanted) - 1))  # the steps between the states asked for
    else:
        state = sampler.init(ctx, x)
        for i in range(ctx.n_steps):
            x, state = sampler.step(ctx, i, x, state)
            x = ctx.accept(x, i + 1)
    ctx.check_finite()
    if denoise and isinstance(ctx.sde, LinearSDEBase):
        x = ctx.predict(x, ctx.n_steps)  # Tweedie's denoised x_0
        ctx.watch(x, ctx.times[-1])
        ctx.check_finite()
    return x
