"""scoresde: continuous-time score-based generative modelling in PyTorch.

SDEs (VP, sub-VP, VE, any linear or custom SDE), exact Gaussian-mixture ground truth,
samplers, probability-flow likelihoods and a denoising-score-matching trainer.
"""

from . import analytic, metrics, sampling, sde
from .sampling import (
    NonFiniteError,
    Sampler,
    SampleResult,
    available_samplers,
    classifier_free_guidance,
    classifier_guidance,
    sample,
)
from .sde import SDE, VESDE, VPSDE, LinearSDE, ReverseSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ReverseSDE",
    "sample",
    "Sampler",
    "SampleResult",
    "NonFiniteError",
    "available_samplers",
    "classifier_guidance",
    "classifier_free_guidance",
    "analytic",
    "metrics",
    "sampling",
    "sde",
    "__version__",
]
