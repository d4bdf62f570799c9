"""scoresde: continuous-time score-based generative modelling in PyTorch.

SDEs (VP, sub-VP, VE, any linear or custom SDE), exact Gaussian-mixture ground truth,
samplers, probability-flow likelihoods and a denoising-score-matching trainer.
"""

from . import analytic, likelihood, sde
from .likelihood import BitsPerDimResult, LikelihoodResult, bits_per_dim, decode, encode, log_likelihood
from .sde import SDE, VESDE, VPSDE, LinearSDE, ReverseSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ReverseSDE",
    "log_likelihood",
    "LikelihoodResult",
    "encode",
    "decode",
    "bits_per_dim",
    "BitsPerDimResult",
    "analytic",
    "likelihood",
    "sde",
    "__version__",
]
