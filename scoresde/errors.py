r"""The one exception hierarchy of scoresde and the argument checks every module shares.

Everything the library raises on purpose derives from :class:`ScoreSDEError`, so
``except scoresde.ScoreSDEError`` catches every deliberate error and nothing else (a bug still
shows its traceback). Each subclass also derives from the built-in exception a caller would
expect -- :class:`ArgumentError` is a ``ValueError``, :class:`NonFiniteError` a
``FloatingPointError`` -- so existing ``except ValueError`` code keeps working.

The checks below are the only place where an argument's rule is written down: the same
argument (``rtol``, ``eps``, ``seed``, ``device``, ...) gets the same rule and the same message
everywhere. Each raises :class:`ArgumentError` naming the argument, what was expected and what
was received (``steps must be an integer >= 1, got 0``). Checks that would read a tensor's values
run only where that is free (plain CPU tensors outside ``torch.func`` transforms and
``torch.compile``), so none of them forces a host-device synchronisation inside a solver.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ScoreSDEError",
    "ArgumentError",
    "NoTransitionKernelError",
    "NonFiniteError",
    "ODESolveError",
    "CheckpointError",
    "RunFolderError",
    "TrainingDivergedError",
]

#: step budget of every adaptive ODE solve (the likelihood, encode / decode, the ODE sampler)
DEFAULT_MAX_STEPS = 10_000


# ---- the exceptions ----------------------------------------------------------------------------
class ScoreSDEError(Exception):
    """Base class of every error scoresde raises on purpose."""


class ArgumentError(ScoreSDEError, ValueError):
    """An argument has a bad type or value; the message names it and what was expected."""


class NoTransitionKernelError(ScoreSDEError, NotImplementedError):
    """A method needs a closed-form transition kernel that this SDE lacks."""


class NonFiniteError(ScoreSDEError, FloatingPointError):
    """A computation (a sampler's state, a score, a log-density) became NaN or infinite; the
    message says where (for a solver, the time it had reached)."""


class ODESolveError(ScoreSDEError, RuntimeError):
    """A probability-flow solve failed: step budget exhausted or step-size underflow (a NaN or
    infinite drift is a :class:`NonFiniteError`).

    ``reason`` says which: ``"max_steps"`` or ``"step_underflow"`` (the
    :class:`~scoresde.flow.FlowSolution` status).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class CheckpointError(ScoreSDEError, ValueError):
    """A checkpoint file is missing, truncated, altered, of an unknown format, or does not
    match the model it is loaded into."""


class RunFolderError(ScoreSDEError, RuntimeError):
    """A run folder cannot be used as asked: it holds another run, another process is training
    in it, or a resumed run's configuration differs from the one it was started with."""


class TrainingDivergedError(ScoreSDEError, RuntimeError):
    """The loss or the gradient became NaN or infinite."""


# ---- scalars -----------------------------------------------------------------------------------
def _as_real(name: str, value, what: str) -> float:
    """``value`` as a float when it is a real number (not a bool, a string or a complex)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_real(name: str, value) -> float:
    """A finite real number."""
    v = _as_real(name, value, "a finite number")
    if not math.isfinite(v):
        raise ArgumentError(f"{name} must be a finite number, got {value!r}")
    return v


def check_positive(name: str, value) -> float:
    """A finite number > 0."""
    v = _as_real(name, value, "a positive number")
    if not (math.isfinite(v) and v > 0):
        raise ArgumentError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_nonneg(name: str, value) -> float:
    """A finite number >= 0."""
    v = _as_real(name, value, "a number >= 0")
    if not (math.isfinite(v) and v >= 0):
        raise ArgumentError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_range(name: str, value, low: float, high: float, *, low_closed: bool = False,
                high_closed: bool = False) -> float:
    """A number in the interval from ``low`` to ``high`` (open ends unless ``*_closed``)."""
    interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
    v = _as_real(name, value, f"a number in {interval}")
    above = v >= low if low_closed else v > low
    below = v <= high if high_closed else v < high
    if not (above and below):  # also refuses NaN
        raise ArgumentError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def check_tolerance(name: str, value) -> float:
    """An ODE solver tolerance (``rtol``, ``atol``): a number in (0, 1)."""
    return check_range(name, value, 0.0, 1.0)


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer >= ``minimum`` (and <= ``maximum``); bools and floats such as 2.0 are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ArgumentError(f"{name} must be an integer {bound}, got {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ArgumentError(f"{name} must be an integer {bound}, got {value!r}")
    return v


def check_optional_int(name: str, value, minimum: int = 1) -> int | None:
    """None, or an integer >= ``minimum``."""
    return None if value is None else check_int(name, value, minimum)


def check_bool(name: str, value) -> bool:
    """True or False (not 0 / 1 / "yes")."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value, choices: Sequence):
    """One of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable value against a set
        ok = False
    if isinstance(value, bool) and not any(c is value for c in choices):
        ok = False  # True == 1: a flag is not a choice among numbers
    if not ok:
        raise ArgumentError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_callable(name: str, value, signature: str = ""):
    """A callable (``signature`` says how it is called, for the message)."""
    if not callable(value):
        raise ArgumentError(f"{name} must be callable {signature}".rstrip() + f", got {type(value).__name__}")
    return value


#: the seeds ``torch.Generator.manual_seed`` takes without wrapping or overflow
SEED_MAX = 2**63 - 1


def check_seed(name: str, value) -> int:
    """A seed: an integer in [0, 2**63 - 1]."""
    return check_int(name, value, 0, SEED_MAX)


def check_eps(eps, T: float, name: str = "eps") -> float:
    """The smallest time of a solve: a number in (0, T)."""
    return check_range(name, eps, 0.0, float(T))


# ---- devices, dtypes, shapes, tensors ----------------------------------------------------------
def check_device(name: str, value) -> torch.device:
    """A device that exists here: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N below the device count), ..."""
    if isinstance(value, torch.device):
        dev = value
    elif isinstance(value, str):
        try:
            dev = torch.device(value)
        except RuntimeError:
            raise ArgumentError(f"{name} must be a device such as 'cpu', 'cuda' or 'cuda:0', got {value!r}") from None
    else:
        raise ArgumentError(f"{name} must be a torch.device or a string such as 'cpu' or 'cuda', got {value!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"{name}={str(dev)!r} but CUDA is not available on this machine; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ArgumentError(
                f"{name}={str(dev)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ArgumentError(f"{name}={str(dev)!r} but MPS is not available on this machine; use 'cpu'")
    elif dev.type not in ("cpu", "meta"):
        accel = getattr(torch, dev.type, None)
        if accel is None or not getattr(accel, "is_available", lambda: False)():
            raise ArgumentError(f"{name}={str(dev)!r} is not available on this machine; use 'cpu'")
    return dev


def check_dtype(name: str, value) -> torch.dtype:
    """A floating-point ``torch.dtype``."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ArgumentError(f"{name} must be a floating-point torch.dtype (e.g. torch.float32), got {value!r}")
    return value


def check_shape(name: str, shape) -> tuple[int, ...]:
    """A non-empty sequence of integer sizes >= 1, e.g. ``(batch, *event_shape)``."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise ArgumentError(f"{name} must be a sequence of positive integers such as (batch, dim), got {shape!r}")
    sizes = tuple(shape)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
        raise ArgumentError(f"{name} must be a non-empty sequence of positive integers, got {shape!r}")
    return tuple(int(s) for s in sizes)


#: dtypes an ODE or SDE solve runs in: half precision lacks the range and resolution for it
SOLVER_DTYPES = (torch.float32, torch.float64)


def check_float_tensor(name: str, x, *, solver: bool = False) -> Tensor:
    """A floating-point tensor (not int, bool or complex); with ``solver=True`` float32 or float64."""
    if not isinstance(x, Tensor):
        raise ArgumentError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ArgumentError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if solver and x.dtype not in SOLVER_DTYPES:
        raise ArgumentError(
            f"{name} must be float32 or float64, got {x.dtype}: half precision has too little range and "
            f"resolution for an ODE/SDE solve (cast with {name}.float(); the score network may still run in half)"
        )
    return x


def values_readable(t: Tensor) -> bool:
    """True when reading ``t``'s values is cheap and legal (eager, CPU, not a functorch wrapper)."""
    if t.device.type != "cpu":
        return False  # reading would force a host-device sync
    if torch.compiler.is_compiling():
        return False
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return not (is_wrapped is not None and is_wrapped(t))


def as_time(t: Tensor | float, T: float, *, like: Tensor | None = None, name: str = "t") -> Tensor:
    """``t`` as a floating tensor, checked to lie in ``[0, T]`` where reading it is free.

    Python numbers become tensors with ``like``'s dtype and device (float64 on the CPU when
    ``like`` is None).
    """
    if not isinstance(t, Tensor):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise ArgumentError(f"{name} must be a number or a floating-point tensor, got {t!r}")
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else None
        t = torch.tensor(float(t), dtype=dtype, device=device)
    check_float_tensor(name, t)
    if values_readable(t) and t.numel() > 0:
        # one read of the value (or of the extremes), ~1 us; NaN fails both comparisons
        if t.numel() == 1:
            lo = hi = float(t.detach())
        else:
            lo, hi = (float(v) for v in torch.aminmax(t.detach()))
        if not (lo >= 0 and hi <= T):
            bad = ~((t >= 0) & (t <= T))
            value = t[bad].flatten()[0].item()
            hint = (" (a NaN time usually means the solver's state overflowed or became NaN before it)"
                    if math.isnan(value) else "")
            raise ArgumentError(f"{name} must lie in [0, T] = [0, {T:g}], got {value!r}{hint}")
    return t


def check_batch(name: str, x) -> Tensor:
    """A batch of data for a solve: a float32/float64 tensor of shape ``(batch, *dims)``, batch >= 1,
    with finite values (read once, before the solve, never inside it)."""
    check_float_tensor(name, x, solver=True)
    if x.dim() < 2 or x.shape[0] < 1:
        raise ArgumentError(f"{name} must have shape (batch, *dims) with batch >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ArgumentError(f"{name} must be finite, got a tensor containing NaN or inf")
    return x


def check_interval(name: str, pair) -> tuple[float, float]:
    """A pair ``(lo, hi)`` of finite numbers with ``lo < hi``."""
    try:
        lo, hi = pair
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be a pair (lo, hi), got {pair!r}") from None
    lo, hi = check_real(f"{name}[0]", lo), check_real(f"{name}[1]", hi)
    if not hi > lo:
        raise ArgumentError(f"{name} must be (lo, hi) with lo < hi, got {pair!r}")
    return lo, hi


def check_labels(name: str, y, num_classes: int, *, batch: int | None = None, null: bool = False,
                 read: bool = True) -> Tensor:
    """Class labels: an integer tensor of shape ``(batch,)`` with values in ``[0, num_classes)``,
    returned as int64. With ``null=True`` the value ``num_classes`` (a class-conditional model's
    null class, its unconditional score) is allowed too. The values are read only where that is
    free (:func:`values_readable`) unless ``read=False`` skips them."""
    if not isinstance(y, Tensor):
        raise ArgumentError(f"{name} must be a LongTensor of class labels of shape (batch,), got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ArgumentError(f"{name} must be an integer tensor of class labels, got dtype {y.dtype}")
    if y.dim() != 1 or (batch is not None and y.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(batch,)"
        raise ArgumentError(f"{name} must have shape {want} (one class label per sample), got {tuple(y.shape)}")
    high = num_classes if null else num_classes - 1
    if read and y.numel() and values_readable(y):
        bad = (y < 0) | (y > high)
        if bool(bad.any()):
            extra = f" ({num_classes} = the null class)" if null else ""
            raise ArgumentError(f"{name} must hold class labels in [0, {high}]{extra}, got {y[bad][0].item()}")
    return y.long()
