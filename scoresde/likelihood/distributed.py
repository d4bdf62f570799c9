r"""Log-likelihood of a whole data set, split into fixed chunks and shared among processes.

:func:`evaluate_log_likelihood` cuts the data into chunks of ``batch_size`` consecutive
samples. Chunk :math:`k` is one call of :func:`~scoresde.likelihood.log_likelihood` whose
Hutchinson probes come from a generator seeded by ``(seed, k)`` only. Under a
``torch.distributed`` process group, rank :math:`r` of :math:`W` solves chunks
:math:`k \equiv r \pmod W` and the per-sample results are all-gathered back into the data's
order. So the numbers do not depend on the number of processes: one process and :math:`W`
processes solve the same chunks with the same probes (an adaptive solver's steps depend on the
whole chunk it integrates, which is why the chunk, not the rank's share, is the unit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ArgumentError
from ..sde import SDE
from .core import log_likelihood, nats_to_bits_per_dim


@dataclass(frozen=True)
class DatasetLikelihood:
    """What :func:`evaluate_log_likelihood` returns.

    Attributes:
        log_p: :math:`\\log p_\\varepsilon(x_i)` in nats for every sample, in the data's order, ``(N,)``.
        nfe: right-hand-side evaluations summed over all chunks (all processes).
        dims: dimensions per sample :math:`D`.
        world_size: processes that shared the work.
    """

    log_p: Tensor
    nfe: int
    dims: int
    world_size: int

    def bits_per_dim(self, num_bins: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
        """Per-sample bits/dim, ``(N,)``; see :func:`~scoresde.likelihood.nats_to_bits_per_dim`."""
        return nats_to_bits_per_dim(self.log_p, self.dims, num_bins, data_range)


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of chunk ``chunk``'s probe generator: a function of the run seed and the sample indices only."""
    return (seed * 1_000_003 + chunk * 2_654_435_761) % 2**63


def _rows(data, lo: int, hi: int) -> Tensor:
    if isinstance(data, Tensor):
        return data[lo:hi]
    items = [data[i] for i in range(lo, hi)]
    items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return torch.stack(items)


def evaluate_log_likelihood(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    data,
    *,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs,
) -> DatasetLikelihood:
    """Log-likelihoods of every sample of ``data``, shared among the ranks of a process group.

    Args:
        score_fn, sde: as for :func:`~scoresde.likelihood.log_likelihood`.
        data: a Tensor ``(N, *dims)`` or a map-style data set of tensors (or tuples starting
            with one), e.g. ``ImageData.dequantized(generator)`` for images.
        batch_size: samples per ODE solve (a chunk); the results depend on it, not on the
            number of processes.
        seed: seeds the Hutchinson probes, chunk by chunk (:func:`chunk_seed`).
        device, dtype: where and in which precision to solve (default: the data's).
        **likelihood_kwargs: passed on (``trace``, ``noise``, ``probes``, ``rtol``, ``atol``,
            ``eps``, ``method``, ``prior_log_prob``, ``chunk_size``, ``exact_method``, ``max_steps``); not
            ``generator``.

    Without a process group (or with one process) this runs every chunk here. In a group every
    rank must call it with the same arguments; each gets the full result.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArgumentError(f"seed must be a non-negative integer, got {seed!r}")
    if "generator" in likelihood_kwargs:
        raise ArgumentError("generator is not accepted: probes are seeded per chunk from seed (see chunk_seed)")
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ArgumentError(f"data must be a Tensor or a map-style data set, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise ArgumentError("data is empty: got 0 samples")
    grouped = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)

    n_chunks = math.ceil(n / batch_size)
    first = _rows(data, 0, 1)
    dev = torch.device(device) if device is not None else first.device
    if grouped and dist.get_backend() == "nccl" and dev.type != "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())  # NCCL gathers CUDA tensors only
    dt = dtype or first.dtype
    log_p = torch.full((n,), float("nan"), device=dev, dtype=dt)
    nfe = torch.zeros((), dtype=torch.int64, device=dev)
    for k in range(rank, n_chunks, world):
        lo, hi = k * batch_size, min(n, (k + 1) * batch_size)
        x = _rows(data, lo, hi).to(device=dev, dtype=dt)
        gen = torch.Generator(device=dev).manual_seed(chunk_seed(seed, k))
        res = log_likelihood(score_fn, sde, x, generator=gen, **likelihood_kwargs)
        log_p[lo:hi] = res.log_p.detach()
        nfe += res.nfe
    if world > 1:
        gathered = [torch.empty_like(log_p) for _ in range(world)]
        dist.all_gather(gathered, log_p)
        owner = (torch.arange(n, device=dev) // batch_size) % world  # the rank that solved sample i
        log_p = torch.stack(gathered)[owner, torch.arange(n, device=dev)]
        dist.all_reduce(nfe)
    return DatasetLikelihood(log_p=log_p, nfe=int(nfe), dims=first[0].numel(), world_size=world)
