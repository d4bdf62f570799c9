r"""Standard normal draws for a batch, from the caller's seed or generator(s).

With one generator per sample (``seed=[...]`` or ``generator=[...]``), sample ``i``'s noise comes
from generator ``i`` alone, so a sample does not depend on its batch-mates (EDM-style per-sample
seeds). Same seed, same draws, on every run.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError, check_seed


class NoiseSource:
    """Standard normal draws for a batch: from one generator, or one generator per sample."""

    def __init__(self, generator: torch.Generator | Sequence[torch.Generator] | None):
        self.per_sample = isinstance(generator, (list, tuple))
        self.generator = list(generator) if self.per_sample else generator

    def __call__(self, like: Tensor) -> Tensor:
        return self.randn(tuple(like.shape), dtype=like.dtype, device=like.device)

    def randn(self, shape: tuple[int, ...], *, dtype: torch.dtype, device) -> Tensor:
        if not self.per_sample:
            return torch.randn(shape, generator=self.generator, dtype=dtype, device=device)
        if shape[0] != len(self.generator):
            raise ArgumentError(f"{len(self.generator)} per-sample seeds given for a batch of {shape[0]}")
        return torch.stack(
            [torch.randn(shape[1:], generator=g, dtype=dtype, device=device) for g in self.generator]
        )


def make_generators(seed, generator, batch: int, device) -> torch.Generator | list[torch.Generator] | None:
    """One generator, or one per sample (from a sequence of seeds or of generators), on ``device``."""
    if seed is not None and generator is not None:
        raise ArgumentError("give seed or generator, not both")
    if generator is not None:
        gens = [generator] if isinstance(generator, torch.Generator) else _per_sample("generator", generator, batch)
        for i, g in enumerate(gens):
            if not isinstance(g, torch.Generator):
                raise ArgumentError(f"generator[{i}] must be a torch.Generator, got {type(g).__name__}")
            if device is not None and g.device.type != device.type:
                raise ArgumentError(f"generator is on {g.device} but the samples on {device}: give a generator of their device")
        return generator if isinstance(generator, torch.Generator) else gens
    if seed is None:
        return None
    dev = device if device is not None else torch.device("cpu")
    if isinstance(seed, Tensor) and seed.dim() == 0:
        seed = seed.item()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return torch.Generator(device=dev).manual_seed(check_seed("seed", seed))
    seeds = _per_sample("seed", seed, batch)
    return [torch.Generator(device=dev).manual_seed(check_seed(f"seed[{i}]", s)) for i, s in enumerate(seeds)]


def _per_sample(name: str, values, batch: int) -> list:
    """``values`` as a list of one entry per sample."""
    if isinstance(values, Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        what = "an integer" if name == "seed" else "a torch.Generator"
        raise ArgumentError(f"{name} must be {what} or a sequence of {batch} {name}s (one per sample), got {values!r}")
    values = list(values)
    if len(values) != batch:
        raise ArgumentError(f"{name} must be one per sample: a sequence of {batch} {name}s, got {len(values)}")
    return values
