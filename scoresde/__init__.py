"""scoresde: continuous-time score-based generative modelling in PyTorch.

SDEs (VP, sub-VP, VE, any linear or custom SDE), exact Gaussian-mixture ground truth,
samplers, probability-flow likelihoods and a denoising-score-matching trainer.
"""

from . import analytic, data, errors, likelihood, metrics, models, sampling, sde, training
from .data import MixtureDataset, ToyDataset, digits_dataset
from .errors import (
    ArgumentError,
    CheckpointError,
    NonFiniteError,
    NoTransitionKernelError,
    ODESolveError,
    RunFolderError,
    ScoreSDEError,
    TrainingDivergedError,
)
from .likelihood import (
    BitsPerDimResult,
    LikelihoodResult,
    NLLBound,
    bits_per_dim,
    decode,
    encode,
    evaluate_log_likelihood,
    log_likelihood,
    nll_bound,
)
from .models import MLP, ScoreModel, UNet
from .sampling import (
    Sampler,
    SampleResult,
    available_samplers,
    classifier_free_guidance,
    classifier_guidance,
    sample,
)
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE, LinearSDE, LinearSDEBase, ReverseSDE, SubVPSDE
from .training import DSMLoss, Run, SlicedScoreMatchingLoss, TrainConfig, Trainer, load_run
from .training.distillation import distill

__version__ = "0.1.0"

__all__ = [
    "ScoreSDEError",
    "ArgumentError",
    "NonFiniteError",
    "ODESolveError",
    "NoTransitionKernelError",
    "CheckpointError",
    "RunFolderError",
    "TrainingDivergedError",
    "SDE",
    "LinearSDEBase",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "ReverseSDE",
    "sample",
    "Sampler",
    "SampleResult",
    "available_samplers",
    "classifier_guidance",
    "classifier_free_guidance",
    "log_likelihood",
    "evaluate_log_likelihood",
    "LikelihoodResult",
    "nll_bound",
    "NLLBound",
    "encode",
    "decode",
    "bits_per_dim",
    "BitsPerDimResult",
    "MLP",
    "UNet",
    "ScoreModel",
    "Trainer",
    "TrainConfig",
    "load_run",
    "Run",
    "DSMLoss",
    "SlicedScoreMatchingLoss",
    "distill",
    "ToyDataset",
    "MixtureDataset",
    "digits_dataset",
    "analytic",
    "data",
    "errors",
    "likelihood",
    "metrics",
    "models",
    "sampling",
    "sde",
    "training",
    "__version__",
]
