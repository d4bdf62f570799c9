r"""Exponential moving average of a model's weights (Polyak averaging).

.. math:: \bar\theta \leftarrow \beta_n \bar\theta + (1-\beta_n)\,\theta,\qquad
          \beta_n = \min\big(\beta, \tfrac{1+n}{10+n}\big),

the warm-up on :math:`\beta_n` keeps early averages from being dominated by the random
initialisation. Buffers (e.g. fixed Fourier frequencies) are copied, not averaged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import ArgumentError
from .checkpoint import load_weights


class EMA:
    """Keeps ``self.model``, a frozen copy of ``model`` holding the averaged weights."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
            raise ArgumentError(f"decay must lie in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - d)
        for avg, b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any], source: str = "the EMA state") -> None:
        load_weights(self.model, state["model"], source)
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
