"""Forward SDEs, their reversal and probability-flow ODE, and the bridge to torchsde."""

from . import schedules
from .base import SDE, NoTransitionKernelError, ReverseSDE, ScoreFn, call_score
from .discrete import DiscreteVPSDE
from .linear import LinearSDE
from .linear_base import PREDICTION_KINDS, LinearSDEBase
from .torchsde_adapter import TorchsdeAdapter, torchsde_integrate
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "LinearSDEBase",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "PREDICTION_KINDS",
    "schedules",
    "ReverseSDE",
    "ScoreFn",
    "NoTransitionKernelError",
    "call_score",
    "TorchsdeAdapter",
    "torchsde_integrate",
]
