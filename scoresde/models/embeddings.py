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

A network built with ``guidance_range=(w_min, w_max)`` also takes the classifier-free guidance
weight :math:`w` as an input (Meng et al. 2023, "On distillation of guided diffusion models",
stage one): :class:`GuidanceEmbedding` maps it to :math:`G(w)`, added like the class vector, so
:math:`e(c) + E_y + G(w)` conditions every block and one network serves every weight in the
range with one evaluation (the teacher's guidance costs two). :math:`G`'s output layer starts
at zero, so a network that gains the input (:func:`~scoresde.models.with_guidance_input`)
computes what it did before until it is trained.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ArgumentError, check_int, check_labels, check_real


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


class GuidanceEmbedding(nn.Module):
    r"""The guidance weight as features: ``(batch,)`` weights -> ``(batch, dim)``.

    :math:`G(w) = W_2\,\mathrm{SiLU}(W_1 [\sin 2\pi B u, \cos 2\pi B u])` of the weight rescaled to
    :math:`u = (w - w_{min})/(w_{max} - w_{min}) \in [0, 1]`, with fixed random frequencies
    :math:`B \sim \mathcal N(0, 4)`; :math:`W_2` starts at zero (see the module).
    """

    def __init__(self, dim: int, guidance_range: tuple[float, float], features: int = 32):
        super().__init__()
        self.guidance_range = check_guidance_range("guidance_range", guidance_range)
        self.fourier = GaussianFourierEmbedding(_check_dim(features), scale=2.0, seed=1)
        self.mlp = nn.Sequential(nn.Linear(features, check_int("dim", dim, 1)), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, w: Tensor) -> Tensor:
        lo, hi = self.guidance_range
        return self.mlp(self.fourier((_check_c(w) - lo) / (hi - lo)))


def check_guidance_range(name: str, value) -> tuple[float, float]:
    """``(w_min, w_max)``, two finite numbers with ``w_min < w_max``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ArgumentError(f"{name} must be two numbers (w_min, w_max), got {value!r}")
    lo, hi = check_real(f"{name}[0]", value[0]), check_real(f"{name}[1]", value[1])
    if not lo < hi:
        raise ArgumentError(f"{name} must have w_min < w_max, got ({lo:g}, {hi:g})")
    return lo, hi


def check_guidance_weight(value, guidance_range: tuple[float, float]) -> float:
    """A guidance weight (a number) checked against the range a network takes."""
    lo, hi = guidance_range
    w = check_real("guidance", value)
    if not lo - 1e-9 <= w <= hi + 1e-9:
        raise ArgumentError(f"guidance: this model was distilled for guidance weights in [{lo:g}, {hi:g}], got {w:g}")
    return w


class Conditioned:
    """What :class:`~scoresde.models.MLP` and :class:`~scoresde.models.UNet` share: the labels
    and the guidance weight added to their time features (``cond_dim`` of them)."""

    cond_dim: int
    num_classes: int | None
    guidance_range: tuple[float, float] | None
    config: dict

    def add_guidance_input(self, guidance_range: tuple[float, float]) -> None:
        """Give the network the guidance weight as an input, for weights in ``guidance_range``: a
        :class:`GuidanceEmbedding` whose output starts at zero, so the network computes what it
        did before; recorded in ``config`` (the network's spec)."""
        if getattr(self, "guidance_range", None) is not None:
            raise ArgumentError(f"guidance_range: this {type(self).__name__} already takes the guidance weight "
                                f"(guidance_range={self.guidance_range})")
        rng = check_guidance_range("guidance_range", guidance_range)
        weight = next(iter(self.parameters()))  # type: ignore[attr-defined]
        self.guidance_embed = GuidanceEmbedding(self.cond_dim, rng).to(weight.device, weight.dtype)
        self.guidance_range = rng
        self.config["guidance_range"] = list(rng)

    def conditioned(self, e: Tensor, y: Tensor | None, w: Tensor | None) -> Tensor:
        """The time features ``e`` plus the class vector :math:`E_y` (with ``num_classes``) and
        the guidance features :math:`G(w)` (with ``guidance_range``, where ``w`` is required).
        Labels or a weight that the network does not take are refused, naming the argument."""
        owner, batch = type(self).__name__, e.shape[0]
        if self.num_classes is not None:
            e = e + self.class_embed(y, batch)
        elif y is not None:
            raise ArgumentError(f"y: this {owner} was built without num_classes and takes no class labels; "
                                f"build it with {owner}(..., num_classes=K)")
        if self.guidance_range is not None:
            if w is None:
                raise ArgumentError(f"w: this {owner} takes the guidance weight as an input "
                                    f"(guidance_range={self.guidance_range}); pass w of shape ({batch},)")
            e = e + self.guidance_embed(w.to(e.dtype))
        elif w is not None:
            raise ArgumentError(f"w: this {owner} was built without guidance_range and takes no guidance weight; "
                                f"build it with {owner}(..., guidance_range=(w_min, w_max))")
        return e


def make_embedding(kind: str, dim: int, scale: float | None = None) -> nn.Module:
    """Build an embedding by name: ``"fourier"`` (default scale 16) or ``"sinusoidal"`` (1000)."""
    if kind == "fourier":
        return GaussianFourierEmbedding(dim, 16.0 if scale is None else scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim, 1000.0 if scale is None else scale)
    raise ArgumentError(f"embedding must be 'fourier' or 'sinusoidal', got {kind!r}")
