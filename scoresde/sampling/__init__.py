r"""Samplers: steps under one driver, one entry point (:func:`sample`).

Names for ``sample(..., sampler=...)`` (:func:`available_samplers`): ``euler_maruyama``,
``reverse_diffusion``, ``ancestral``, ``pc``, ``annealed_langevin``, ``ode``, ``heun``,
``dpm_solver``, ``dpm_solver_sde``, ``ddim``, ``ipndm``, ``unipc``, ``torchsde``. Which serve a
given SDE, and what each declares, come from the registry: :func:`samplers_serving`, :func:`capabilities`.

**The pieces.** :mod:`~scoresde.sampling.base` (what a sampler declares: requirements, orders,
evaluations, defaults), :mod:`~scoresde.sampling.registry` (names, the lists derived from them
and the one refusal, :func:`~scoresde.sampling.registry.check_serves`),
:mod:`~scoresde.sampling.context` (what the steps see; after each step the projection, NaN
flag, trajectory, progress and NFE count), :mod:`~scoresde.sampling.driver` (the loop),
:mod:`~scoresde.sampling.api` (:func:`sample`), one module per sampler,
:mod:`~scoresde.sampling.grids`, :mod:`~scoresde.sampling.grid_fit`,
:mod:`~scoresde.sampling.conditioning`, :mod:`~scoresde.sampling.budget` (NFE from the
declarations).

**Adding a sampler** is one file ``scoresde/sampling/my_sampler.py`` plus its import in this
``__init__`` (and ``__all__``)::

    from .base import LINEAR, MARGINALS, Sampler, batch_time
    from .registry import register

    @register
    class MySampler(Sampler):
        name = "my_sampler"                 # sample(..., sampler="my_sampler")
        requires = (LINEAR, MARGINALS)      # checked by registry.check_serves, one message
        evaluations_per_step = 1            # or override evaluations(steps, sde)
        default_steps, default_grid = 20, "log_snr"

        def __init__(self, eta: float = 0.0):       # options: keyword arguments, checked here
            self.eta = check_nonneg("eta", eta)

        def order(self, sde): return 1.0            # strong / ODE order on `sde` (None: none)
        def weak_order(self, sde): return 1.0       # moments (default: order if deterministic)
        def is_stochastic(self): return self.eta > 0
        default_end_level = None            # sigma/alpha where the default grid ends (None: sde.eps)

        def init(self, ctx, x):                     # once: what the steps keep
            return []                               # e.g. a multistep history
        def step(self, ctx, i, x, history):         # ctx.times[i] -> ctx.times[i + 1]
            alphas, sigmas = ctx.marginals          # on the grid, computed once
            score = ctx.score(x, batch_time(ctx.times[i], x))   # counted
            ...                                     # ctx.noise(x) for noise, ctx.log_snr
            return x_next, history

The driver applies projections, checks for NaN, records, advances the progress bar and denoises;
a step never reads a tensor on the host. A sampler that hands the whole solve to a library sets
``solves_whole = True`` and implements ``solve(ctx, x)`` instead (``ode``, ``torchsde``). The tests
pick a new sampler up from the registry: its declared evaluations against the counted ones, its
refusals, and its convergence slope against ``order(sde)`` / ``weak_order(sde)`` once it is listed
in ``tests/sampling/test_convergence.py``.
"""

from ..errors import NonFiniteError
from .ancestral import Ancestral
from .annealed_langevin import AnnealedLangevin
from .api import sample
from .base import (
    LINEAR,
    MARGINALS,
    REQUIREMENTS,
    T_ONLY_DIFFUSION,
    Requirement,
    Sampler,
    SampleResult,
    Trajectory,
)
from .budget import expected_nfe, steps_for_nfe
from .conditioning import classifier_free_guidance, classifier_guidance, compose_scores, conditional_score
from .context import Context
from .ddim import DDIM
from .dpm_sde import DPMSolverSDE
from .dpm_solver import DPMSolver
from .euler_maruyama import EulerMaruyama
from .grid_fit import GridFile, GridFit, load_grid, optimize_grid, save_grid
from .grids import time_grid
from .heun import Heun
from .ipndm import IPNDM
from .ode import ProbabilityFlowODE
from .pc import PredictorCorrector
from .registry import available_samplers, capabilities, get_sampler, register, samplers_serving
from .reverse_diffusion import ReverseDiffusion
from .torchsde_sampler import TorchsdeSampler
from .unipc import UniPC

__all__ = [
    "sample",
    "Sampler",
    "SampleResult",
    "Trajectory",
    "Context",
    "Requirement",
    "LINEAR",
    "MARGINALS",
    "T_ONLY_DIFFUSION",
    "REQUIREMENTS",
    "NonFiniteError",
    "available_samplers",
    "samplers_serving",
    "capabilities",
    "get_sampler",
    "register",
    "expected_nfe",
    "steps_for_nfe",
    "time_grid",
    "optimize_grid",
    "GridFit",
    "save_grid",
    "load_grid",
    "GridFile",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "PredictorCorrector",
    "AnnealedLangevin",
    "ProbabilityFlowODE",
    "Heun",
    "IPNDM",
    "DPMSolver",
    "DPMSolverSDE",
    "DDIM",
    "TorchsdeSampler",
    "UniPC",
    "classifier_guidance",
    "classifier_free_guidance",
    "conditional_score",
    "compose_scores",
]
