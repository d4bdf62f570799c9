r"""Time (noise-level) embeddings for score networks.

A score network conditions on a scalar :math:`c` per sample (``t``, or the log-SNR
:math:`\lambda_t`; see :class:`~scoresde.models.ScoreModel`). Both embeddings map ``c`` of
shape ``(batch,)`` to features of shape ``(batch, dim)``:

* :class:`GaussianFourierEmbedding` (Tancik et al. 2020; NCSN++):
  :math:`[\sin 2\pi W c,\ \cos 2\pi W c]` with fixed random :math:`W \sim \mathcal N(0, s^2)`;
* :class:`SinusoidalEmbedding` (Vaswani et al. 2017; DDPM):
  :math:`[\sin(k c\,\omega_j),\ \cos(k c\,\omega_j)]`, :math:`\omega_j = P^{-j/(d/2-1)}`.

A class-conditional network also embeds a label :math:`y \in \{0, \dots, K-1\}`
(:class:`ClassEmbedding`, a learned vector :math:`E_y` per class) and adds it to the time
features, so :math:`e(c) + E_y` conditions every block. Row :math:`K` is the *null class*
:math:`\varnothing`: the same network, fed :math:`E_\varnothing`, is the unconditional model
that classifier-free guidance needs (trained by label dropout, see
:class:`~scoresde.training.DSMLoss`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ArgumentError, check_int, check_labels


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ArgumentError(f"dim must be an even integer >= 2, got {dim!r}")
    return dim


def _check_c(c: Tensor) -> Tensor:
    if not isinstance(c, Tensor) or c.dim() != 1:
        got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
        raise ArgumentError(f"the time input must be a tensor of shape (batch,), got {got}")
    return c


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar; ``scale`` sets the frequency spread.

    The frequencies are a buffer drawn from ``seed``, so two embeddings built alike agree and
    the features are part of the state dict.
    """

    def __init__(self, dim: int = 128, scale: float = 16.0, seed: int = 0):
        super().__init__()
        self.dim = _check_dim(dim)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ArgumentError(f"scale must be a positive number, got {scale!r}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, c: Tensor) -> Tensor:
        proj = _check_c(c)[:, None] * self.W.to(c.dtype)[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal features of ``scale * c`` (``scale=1000`` for ``c = t`` in [0, 1])."""

    def __init__(self, dim: int = 128, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        self.dim = _check_dim(dim)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ArgumentError(f"scale must be a positive number, got {scale!r}")
        if not (isinstance(max_period, (int, float)) and max_period > 1):
            raise ArgumentError(f"max_period must be a number > 1, got {max_period!r}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs)
        self.scale = float(scale)

    def forward(self, c: Tensor) -> Tensor:
        arg = (self.scale * _check_c(c))[:, None] * self.freqs.to(c.dtype)[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class ClassEmbedding(nn.Module):
    """A learned vector per class plus one for the null class: ``(batch,)`` labels -> ``(batch, dim)``.

    Labels are integers in ``[0, num_classes]``; the value ``num_classes`` (and ``y=None``, for
    the whole batch) selects the null class, i.e. the unconditional model.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.table = nn.Embedding(self.num_classes + 1, check_int("dim", dim, 1))

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        if y is None:  # unconditional: the null class for every sample
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.table.weight.device)
        else:
            y = check_labels("y", y, self.num_classes, batch=batch, null=True)
        return self.table(y)


def make_embedding(kind: str, dim: int, scale: float | None = None) -> nn.Module:
    """Build an embedding by name: ``"fourier"`` (default scale 16) or ``"sinusoidal"`` (1000)."""
    if kind == "fourier":
        return GaussianFourierEmbedding(dim, 16.0 if scale is None else scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim, 1000.0 if scale is None else scale)
    raise ArgumentError(f"embedding must be 'fourier' or 'sinusoidal', got {kind!r}")
