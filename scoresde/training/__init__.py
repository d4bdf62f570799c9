"""Score-matching losses, the ``Trainer`` (AdamW, EMA, AMP, logs, checked run folders, atomic
checkpoints), EMA, ``load_run`` to reload a trained run, and the noisy classifier for classifier
guidance."""

from . import distributed
from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_training_checkpoint,
    save_checkpoint,
)
from .classifier import NoisyClassifier, fit_noisy_classifier
from .config import TrainConfig
from .distillation import (
    DistillationLoss,
    DistilledStudent,
    DistillResult,
    GuidanceDistillationLoss,
    RoundInfo,
    distill,
)
from .ema import EMA
from .losses import DSMLoss, SlicedScoreMatchingLoss
from .run import Run, load_run
from .run_folder import RunFolder
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "DSMLoss",
    "SlicedScoreMatchingLoss",
    "Trainer",
    "TrainConfig",
    "TrainingDivergedError",
    "EMA",
    "load_run",
    "Run",
    "RunFolder",
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_training_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "distributed",
    "NoisyClassifier",
    "fit_noisy_classifier",
    "distill",
    "DistillationLoss",
    "GuidanceDistillationLoss",
    "DistillResult",
    "DistilledStudent",
    "RoundInfo",
]
