r"""A U-Net score network for images in the DDPM++ / NCSN++ style (Song et al. 2021, App. H).

Structure, for ``channel_mults = (m_1, ..., m_L)`` and ``base`` channels:

* a 3x3 input convolution to ``base`` channels;
* at level ``l``: ``num_res_blocks`` residual blocks of width ``base * m_l`` (GroupNorm, SiLU,
  3x3 conv, + a projection of the time embedding, GroupNorm, SiLU, dropout, 3x3 conv; skip
  connection, sum scaled by :math:`1/\sqrt2`), self-attention after each block whose
  resolution is in ``attn_resolutions``, then a 2x downsampling (average pooling) except at
  the last level;
* a middle of residual block, attention, residual block;
* the mirror path upwards, each block taking the concatenated skip activation, with
  nearest-neighbour 2x upsampling followed by a 3x3 conv;
* GroupNorm, SiLU and a zero-initialised 3x3 output convolution.

A class-conditional U-Net (``num_classes=K``) adds a learned class vector :math:`E_y` to the
time embedding before it reaches the blocks (row :math:`K`: the null class, for ``y=None``); one
built with ``guidance_range`` adds the guidance features :math:`G(w)` as well.

Spatial sizes must be divisible by :math:`2^{L-1}`. It trains on 8x8 digits on a CPU in minutes
(``base=32, channel_mults=(1, 2)``) and scales to 32x32 and beyond with more levels and width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ArgumentError, check_optional_int
from .embeddings import ClassEmbedding, Conditioned, make_embedding


def _groups(ch: int) -> int:
    """The most GroupNorm groups (up to 32) that divide ``ch`` with at least 2 channels each."""
    for g in (32, 16, 8, 4, 2):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class ResBlock(nn.Module):
    """Residual block with additive time conditioning (BigGAN/DDPM++ style without resampling)."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over the spatial positions, residual, scaled by 1/sqrt(2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = h.transpose(1, 2).reshape(B, C, H, W)
        return (x + self.proj(h)) / math.sqrt(2.0)


class UNet(Conditioned, nn.Module):
    """U-Net ``net(x, c) -> x.shape`` for images of shape ``(batch, in_channels, H, W)``.

    Args:
        in_channels: image channels.
        image_size: height = width of the input images (fixes where attention sits).
        base: channels at the first level.
        channel_mults: width multiplier per level (its length is the number of levels).
        num_res_blocks: residual blocks per level on the way down (one more per level on the way up,
            as in DDPM++, to consume the downsampling's skip activation).
        attn_resolutions: spatial sizes (H) at which self-attention follows each block.
        dropout: dropout inside the residual blocks.
        embedding, embedding_scale: time embedding (see :mod:`scoresde.models.embeddings`).
        num_classes: :math:`K` for a class-conditional network ``net(x, c, y)`` (labels in
            ``[0, K)``, ``K`` or ``y=None`` the null class); None (default): ``net(x, c)`` only.
        guidance_range: ``(w_min, w_max)`` for a network that also takes the guidance weight,
            ``net(x, c, y, w=weights)`` (a guidance-distilled student, see
            :mod:`scoresde.models.embeddings`); None (default): no weight input.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        base: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attn_resolutions: Sequence[int] = (4,),
        dropout: float = 0.0,
        *,
        embedding: str = "fourier",
        embedding_scale: float | None = None,
        num_classes: int | None = None,
        guidance_range: tuple[float, float] | None = None,
    ):
        super().__init__()
        for name, v in (
            ("in_channels", in_channels), ("image_size", image_size), ("base", base), ("num_res_blocks", num_res_blocks)
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ArgumentError(f"{name} must be a positive integer, got {v!r}")
        mults = tuple(channel_mults)
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
            raise ArgumentError(f"channel_mults must be a non-empty sequence of positive integers, got {channel_mults!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ArgumentError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.levels = len(mults)
        if image_size % 2 ** (self.levels - 1):
            raise ArgumentError(f"image_size must be divisible by {2 ** (self.levels - 1)} for {self.levels} levels, got {image_size}")
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.config = dict(
            in_channels=in_channels, image_size=image_size, base=base, channel_mults=list(mults), num_res_blocks=num_res_blocks,
            attn_resolutions=list(self.attn_resolutions), dropout=float(dropout), embedding=embedding,
            embedding_scale=embedding_scale,
        )
        self.num_classes = check_optional_int("num_classes", num_classes)
        temb_dim = 4 * base
        if self.num_classes is not None:  # recorded only when set: unconditional specs stay as they were
            self.config["num_classes"] = self.num_classes
        self.embed = nn.Sequential(
            make_embedding(embedding, base, embedding_scale),
            nn.Linear(base, temb_dim),
            nn.SiLU(),
            nn.Linear(temb_dim, temb_dim),
        )
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        # Down path: record every activation pushed onto the skip stack and its channels.
        self.down = nn.ModuleList()
        skip_ch = [base]
        ch = base
        for lvl, m in enumerate(mults):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, base * m, temb_dim, dropout))
                ch = base * m
                skip_ch.append(ch)
            if lvl != self.levels - 1:
                self.down.append(nn.AvgPool2d(2))
                skip_ch.append(ch)
        self.mid1 = ResBlock(ch, ch, temb_dim, dropout)
        self.mid_attn = AttnBlock(ch)
        self.mid2 = ResBlock(ch, ch, temb_dim, dropout)
        self.up = nn.ModuleList()
        for lvl, m in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skip_ch.pop(), base * m, temb_dim, dropout))
                ch = base * m
            if lvl != 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # Self-attention after the residual blocks that run at a resolution in attn_resolutions.
        self.attn = nn.ModuleDict()
        size = image_size
        for i, layer in enumerate(self.down):
            if isinstance(layer, nn.AvgPool2d):
                size //= 2
            elif size in self.attn_resolutions:
                self.attn[f"d{i}"] = AttnBlock(layer.conv2.out_channels)
        for i, layer in enumerate(self.up):
            if isinstance(layer, nn.Upsample):
                size *= 2
            elif isinstance(layer, ResBlock) and size in self.attn_resolutions:
                self.attn[f"u{i}"] = AttnBlock(layer.conv2.out_channels)
        if self.num_classes is not None:  # built last: the other layers draw the same initial weights
            self.class_embed = ClassEmbedding(self.num_classes, temb_dim)
        self.cond_dim, self.guidance_range = temb_dim, None
        if guidance_range is not None:
            self.add_guidance_input(guidance_range)

    def _attention(self, key: str, h: Tensor) -> Tensor:
        return self.attn[key](h) if key in self.attn else h

    def forward(self, x: Tensor, c: Tensor, y: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ArgumentError(
                f"UNet(in_channels={self.in_channels}) expects x of shape (batch, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ArgumentError(
                f"UNet(image_size={self.image_size}) expects images of size "
                f"{self.image_size}x{self.image_size}, got {tuple(x.shape[-2:])}"
            )
        if c.shape != (x.shape[0],):
            raise ArgumentError(f"c must have shape ({x.shape[0]},), got {tuple(c.shape)}")
        temb = self.conditioned(self.embed(c), y, w)
        h = self.conv_in(x)
        stack = [h]
        for i, layer in enumerate(self.down):
            if isinstance(layer, ResBlock):
                h = self._attention(f"d{i}", layer(h, temb))
            else:
                h = layer(h)
            stack.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for i, layer in enumerate(self.up):
            if isinstance(layer, ResBlock):
                h = self._attention(f"u{i}", layer(torch.cat([h, stack.pop()], dim=1), temb))
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
