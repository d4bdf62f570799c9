"""Samplers: one interface (:class:`Sampler`), many methods, one entry point (:func:`sample`).

Names for ``sample(..., sampler=...)``: ``euler_maruyama``, ``reverse_diffusion``, ``ancestral``,
``pc``, ``annealed_langevin``, ``ode``, ``heun``, ``dpm_solver``, ``torchsde``.
"""

from .api import sample
from .base import (
    NonFiniteError,
    Sampler,
    SampleResult,
    SolveContext,
    Trajectory,
    available_samplers,
    get_sampler,
    register,
)
from .conditioning import classifier_free_guidance, classifier_guidance, compose_scores, conditional_score
from .dpm_solver import DPMSolver
from .grids import time_grid
from .heun import Heun
from .langevin import AnnealedLangevin, PredictorCorrector
from .ode import ProbabilityFlowODE
from .sde_solvers import Ancestral, EulerMaruyama, ReverseDiffusion
from .torchsde_sampler import TorchsdeSampler

__all__ = [
    "sample",
    "Sampler",
    "SampleResult",
    "Trajectory",
    "SolveContext",
    "NonFiniteError",
    "available_samplers",
    "get_sampler",
    "register",
    "time_grid",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "PredictorCorrector",
    "AnnealedLangevin",
    "ProbabilityFlowODE",
    "Heun",
    "DPMSolver",
    "TorchsdeSampler",
    "classifier_guidance",
    "classifier_free_guidance",
    "conditional_score",
    "compose_scores",
]
