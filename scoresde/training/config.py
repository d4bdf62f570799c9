"""``TrainConfig``: the Trainer's hyper-parameters, validated, JSON-serialisable, and which of them
a resumed run may change."""

from __future__ import annotations

import dataclasses
import math

from ..errors import (
    ArgumentError,
    check_bool,
    check_choice,
    check_int,
    check_nonneg,
    check_positive,
    check_range,
    check_seed,
)

#: fields that change no update: a resumed run may set them anew (``steps`` too, see below)
RESUMABLE_FIELDS = ("progress", "log_every", "checkpoint_every", "eval_every", "keep_checkpoints", "tensorboard")


def may_change_on_resume(field: str, old: dict, new: dict) -> bool:
    """Whether ``field`` of the ``train`` config may differ between a run and its resumption.

    Only fields that change no update may: :data:`RESUMABLE_FIELDS`, and ``steps`` when both
    runs use the constant schedule (the cosine schedule decays over ``steps``, so more steps
    change every learning rate).
    """
    if field in RESUMABLE_FIELDS:
        return True
    return field == "steps" and old.get("lr_schedule") == new.get("lr_schedule") == "constant"


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of :class:`Trainer` (stored as JSON in ``config.json`` and checkpoints)."""

    steps: int = 10_000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # or "cosine" (to min_lr_ratio * lr at `steps`)
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    amp: bool = False
    amp_dtype: str = "bfloat16"  # or "float16" (with a gradient scaler)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    eval_every: int = 0  # 0: never
    keep_checkpoints: int = 3
    progress: bool = True
    tensorboard: bool | None = None  # None: when installed

    def validate(self) -> TrainConfig:
        """Check every field (an :class:`~scoresde.errors.ArgumentError` names the first bad one)."""
        for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "checkpoint_every", "eval_every"):
            check_int(name, getattr(self, name), 0)
        check_seed("seed", self.seed)
        self.lr = check_positive("lr", self.lr)
        self.weight_decay = check_nonneg("weight_decay", self.weight_decay)
        if self.grad_clip is not None:
            self.grad_clip = check_positive("grad_clip", self.grad_clip)
        self.ema_decay = check_range("ema_decay", self.ema_decay, 0.0, 1.0, low_closed=True)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        self.min_lr_ratio = check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0, low_closed=True, high_closed=True)
        check_choice("amp_dtype", self.amp_dtype, ("bfloat16", "float16"))
        check_bool("amp", self.amp)
        check_bool("progress", self.progress)
        if self.tensorboard is not None:
            check_bool("tensorboard", self.tensorboard)
        if isinstance(self.betas, (str, bytes)) or not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ArgumentError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(check_range(f"betas[{i}]", b, 0.0, 1.0, low_closed=True) for i, b in enumerate(self.betas))
        return self

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` for the update after ``step`` completed steps."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.lr_schedule == "constant":
            return warm
        frac = min(step, self.steps) / self.steps
        return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
