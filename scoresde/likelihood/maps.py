r"""The PF-ODE maps between data and latents: ``encode`` (data at :math:`\varepsilon` to
:math:`x_T`) and ``decode`` (latents at :math:`T` back to data; from prior draws, the
deterministic ODE sampler)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, ScoreFn
from ._checks import check_data, check_method, check_positive_int, check_sde, check_tolerance, resolve_eps
from .flow import ProbabilityFlow, solve


def _pf_map(score_fn, sde, x, *, forward, name, method, rtol, atol, eps, max_steps, progress):
    sde = check_sde(sde)
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable, got {type(score_fn).__name__}")
    check_data(name, x)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    check_method(method)
    eps = resolve_eps(sde, eps)
    system = ProbabilityFlow(score_fn, sde)
    t0, t1 = (eps, sde.T) if forward else (sde.T, eps)
    with torch.no_grad():
        return solve(
            system, x, t0, t1, like=x, method=method, rtol=rtol, atol=atol,
            max_steps=max_steps, progress=progress, desc="encode" if forward else "decode",
        )


def encode(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    max_steps: int = 10_000,
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
    max_steps: int = 10_000,
    progress: bool = False,
) -> Tensor:
    r"""Map latents ``z`` at time ``T`` back to data at time ``eps`` by the PF-ODE (inverse of :func:`encode`).

    With ``z`` drawn from the prior this is the deterministic ODE sampler.
    """
    return _pf_map(
        score_fn, sde, z, forward=False, name="z", method=method, rtol=rtol, atol=atol,
        eps=eps, max_steps=max_steps, progress=progress,
    )
