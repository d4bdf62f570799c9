"""Argument checks shared by ``log_likelihood``, ``encode``/``decode`` and the bits/dim helpers.

Each raises ``ValueError`` naming the argument and the value received. ``check_data`` reads
the data once, before the solve (never inside it), to refuse NaN or inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sde import SDE
from ..sde._checks import check_float_tensor, check_positive

#: torchdiffeq's adaptive methods (rtol/atol and a step budget); the fixed-step ones take one
#: step per interval of the output times (the ODE sampler offers both, the likelihood adaptive only).
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


def check_data(name: str, x: Tensor) -> Tensor:
    check_float_tensor(name, x)
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (batch, *dims) with batch >= 1, got {tuple(x.shape)}"
        )
    # One upfront check (a single host read), never inside the solve.
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got a tensor containing NaN or inf")
    return x


def check_sde(sde: SDE) -> SDE:
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if sde.state_dependent_diffusion:
        raise ValueError(
            f"sde must have a diffusion that depends on t only; {type(sde).__name__} sets "
            "state_dependent_diffusion=True, which the PF-ODE likelihood does not support"
        )
    return sde


def check_tolerance(name: str, value) -> float:
    """A solver tolerance: a positive finite number."""
    return check_positive(name, value)


def check_positive_int(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_method(method: str) -> str:
    if method not in ADAPTIVE_METHODS:
        raise ValueError(f"method must be one of the adaptive torchdiffeq methods {ADAPTIVE_METHODS}, got {method!r}")
    return method


def resolve_eps(sde: SDE, eps) -> float:
    if eps is None:
        return float(sde.eps)
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number in [0, T={sde.T:g}), got {eps!r}") from None
    if not (0 <= e < sde.T):
        raise ValueError(f"eps must be a number in [0, T={sde.T:g}), got {eps!r}")
    return e


def check_data_range(data_range) -> tuple[float, float]:
    """``data_range`` as floats ``(lo, hi)`` with ``lo < hi``."""
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (lo, hi), got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"data_range must be (lo, hi) with finite lo < hi, got {data_range!r}")
    return lo, hi
