"""Forward SDEs, their reversal and probability-flow ODE, and the bridge to torchsde."""

from .base import SDE, NoTransitionKernelError, ReverseSDE, ScoreFn, call_score
from .linear import LinearSDE
from .torchsde_adapter import TorchsdeAdapter, torchsde_integrate
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ReverseSDE",
    "ScoreFn",
    "NoTransitionKernelError",
    "call_score",
    "TorchsdeAdapter",
    "torchsde_integrate",
]
