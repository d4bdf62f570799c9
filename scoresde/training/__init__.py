"""Score-matching losses, the ``Trainer`` (AdamW, EMA, AMP, logs, atomic checkpoints), EMA."""

from . import distributed
from .checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .ema import EMA
from .losses import DSMLoss, SlicedScoreMatchingLoss
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "DSMLoss",
    "SlicedScoreMatchingLoss",
    "Trainer",
    "TrainConfig",
    "TrainingDivergedError",
    "EMA",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "distributed",
]
