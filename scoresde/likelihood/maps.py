r"""The PF-ODE maps between data and latents: ``encode`` (data at :math:`\varepsilon` to
:math:`x_T`) and ``decode`` (latents at :math:`T` back to data; from prior draws, the
deterministic ODE sampler)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DEFAULT_MAX_STEPS, check_batch, check_callable, check_eps, check_int, check_tolerance
from ..flow import ProbabilityFlow, check_adaptive_method, check_flow_sde, solve
from ..sde import SDE, ScoreFn


def _pf_map(score_fn, sde, x, *, forward, name, method, rtol, atol, eps, max_steps, progress):
    sde = check_flow_sde(sde)
    check_callable("score_fn", score_fn, "score_fn(x, t)")
    check_batch(name, x)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    max_steps = check_int("max_steps", max_steps)
    check_adaptive_method(method)
    eps = check_eps(sde.eps if eps is None else eps, sde.T)
    system = ProbabilityFlow(score_fn, sde)
    t0, t1 = (eps, sde.T) if forward else (sde.T, eps)
    with torch.no_grad():
        return solve(
            system, x, [t0, t1], like=x, method=method, rtol=rtol, atol=atol,
            max_steps=max_steps, progress=progress, desc="encode" if forward else "decode",
        ).final


def encode(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: bool = False,
) -> Tensor:
    r"""Map data ``x`` (at time ``eps``, default ``sde.eps``) to the latent :math:`z = x_T` by the PF-ODE.

    Deterministic and invertible up to the solver tolerance: ``decode(encode(x)) ~ x``.
    Returns a tensor of ``x``'s shape.
    """
    return _pf_map(
        score_fn, sde, x, forward=True, name="x", method=method, rtol=rtol, atol=atol,
        eps=eps, max_steps=max_steps, progress=progress,
    )


def decode(
    score_fn: ScoreFn,
    sde: SDE,
    z: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: bool = False,
) -> Tensor:
    r"""Map latents ``z`` at time ``T`` back to data at time ``eps`` by the PF-ODE (inverse of :func:`encode`).

    With ``z`` drawn from the prior this is the deterministic ODE sampler.
    """
    return _pf_map(
        score_fn, sde, z, forward=False, name="z", method=method, rtol=rtol, atol=atol,
        eps=eps, max_steps=max_steps, progress=progress,
    )
