"""Argument checks shared by the SDE classes.

Every check raises ``ValueError`` naming the argument and the value received, so a
user sees ``beta_min must be positive, got 0.0`` rather than a NaN twenty steps later.
Checks that would read a tensor's values (and so force a host sync on a GPU, or break
under ``torch.func`` transforms and ``torch.compile``) run only on plain CPU tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float after checking that it is a finite number > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_float_tensor(name: str, x: Tensor) -> Tensor:
    """Check that ``x`` is a floating-point tensor (not int, bool or complex)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _values_readable(t: Tensor) -> bool:
    """True when reading ``t``'s values is cheap and legal (eager, CPU, not a functorch wrapper)."""
    if t.device.type != "cpu":
        return False  # reading would force a host-device sync
    if torch.compiler.is_compiling():
        return False
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return not (is_wrapped is not None and is_wrapped(t))


def as_time(t: Tensor | float, T: float, *, like: Tensor | None = None, name: str = "t") -> Tensor:
    """Convert ``t`` to a floating tensor and check that it lies in ``[0, T]``.

    Python numbers become tensors with ``like``'s dtype and device (float64 on the CPU
    when ``like`` is None).
    """
    if not isinstance(t, Tensor):
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ValueError(f"{name} must be a float or a floating-point tensor, got {t!r}")
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else None
        t = torch.tensor(float(t), dtype=dtype, device=device)
    check_float_tensor(name, t)
    if _values_readable(t) and t.numel() > 0:
        bad = ~((t >= 0) & (t <= T))  # also catches NaN
        if bool(bad.any()):
            raise ValueError(f"{name} must lie in [0, T] = [0, {T:g}], got {t[bad].flatten()[0].item()!r}")
    return t


def expand_to(coef: Tensor, x: Tensor, name: str = "t") -> Tensor:
    """Reshape a per-sample coefficient of shape ``batch`` so it broadcasts against ``x``.

    ``coef`` has the shape of the time tensor: scalar, or the leading dimensions of ``x``.
    """
    if coef.dim() == 0:
        return coef
    if coef.dim() > x.dim() or tuple(x.shape[: coef.dim()]) != tuple(coef.shape):
        raise ValueError(
            f"{name} must be a scalar or have the leading (batch) shape of x, "
            f"got {name}.shape={tuple(coef.shape)} for x.shape={tuple(x.shape)}"
        )
    return coef.reshape(coef.shape + (1,) * (x.dim() - coef.dim()))
