"""``TrainConfig``: the Trainer's hyper-parameters, validated, JSON-serialisable."""

from __future__ import annotations

import dataclasses
import math


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
        def pos_int(name, allow_zero=False):
            v = getattr(self, name)
            lo = 0 if allow_zero else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

        for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
            pos_int(name)
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "seed"):
            pos_int(name, allow_zero=True)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if self.amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be 'bfloat16' or 'float16', got {self.amp_dtype!r}")
        self.betas = tuple(float(b) for b in self.betas)
        return self

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` for the update after ``step`` completed steps."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.lr_schedule == "constant":
            return warm
        frac = min(step, self.steps) / self.steps
        return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
