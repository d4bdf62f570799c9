r"""A set of samples drawn in fixed chunks with per-sample seeds, shared among processes.

:func:`sample_in_chunks` draws ``n`` samples as :math:`\lceil n/B\rceil` chunks of nearly equal
size (``batch_size`` :math:`B` at most, sizes differing by at most one, :func:`chunk_bounds`).
Chunk :math:`k` is one call of :func:`scoresde.sample` whose sample :math:`i` is seeded by
``sample_seeds(seed, n)[i]`` (:func:`sample_seed`). Under a ``torch.distributed`` process group
rank :math:`r` of :math:`W` draws the chunks :math:`k \equiv r \pmod W` and the chunks are
gathered back into seed order on every rank. One process draws the same chunks one after
another. Every score evaluation therefore sees the same batch, with the same rows, whatever the
number of processes, so the result does not depend on it: bit for bit, without assuming that
the network's kernels (BLAS, convolutions) give the same round-off for other batch sizes, and
also for samplers whose steps depend on the whole batch (the adaptive ``ode``'s error control).
``batch_size`` can change the result where the batch matters (adaptive steps, batch-size-dependent
kernels); with a fixed-step sampler and a score that is computed row by row it does not.

Samplers that cannot take per-sample seeds (``torchsde``, whose Brownian motion spans the
batch; ``pc`` with the Langevin corrector on an SDE without closed-form marginals, whose step is
set from the batch's mean score norm) are asked once, on a two-sample probe
(:func:`per_sample_refusal`), and are then served per chunk: chunk :math:`k` gets one generator
seeded by ``chunk_seed(seed, k)``. Their samples then depend on their chunk-mates and on
``batch_size``, but still not on the number of processes.

This module sits between :mod:`scoresde.sampling` (whose public :func:`~scoresde.sample` it calls)
and :mod:`scoresde.cli` (``scoresde sample``, which calls it); nothing below it imports it. It
uses a process group when one is initialised (``torchrun`` plus
:func:`scoresde.training.distributed.setup`, or your own ``init_process_group``) and never creates
one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import SEED_MAX, ArgumentError, ScoreSDEError, check_int, check_seed, check_shape
from .sampling import Sampler, sample
from .sde import SDE

__all__ = ["ChunkedSamples", "sample_in_chunks", "sample_seed", "sample_seeds", "chunk_seed", "chunk_bounds",
           "per_sample_refusal"]

_M64 = 2**64


def _mix(z: int) -> int:
    """splitmix64's finaliser: nearby integers give unrelated 64-bit values."""
    z %= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % _M64
    return z ^ (z >> 31)


def sample_seed(seed: int, i: int) -> int:
    """The seed of sample ``i`` of a set drawn with ``seed``: in [0, 2**63 - 1], a function of
    ``(seed, i)`` only (so ``--seed 1`` does not repeat ``--seed 0``'s samples shifted by one)."""
    return _mix(_mix(seed * 0x9E3779B97F4A7C15 + 0xD1B54A32D192ED03) + i * 0x9E3779B97F4A7C15) % (SEED_MAX + 1)


def sample_seeds(seed: int, n: int) -> list[int]:
    """``[sample_seed(seed, i) for i in range(n)]``: the first ``m`` do not depend on ``n``."""
    check_seed("seed", seed)
    return [sample_seed(seed, i) for i in range(check_int("n", n, 0))]


def chunk_seed(seed: int, k: int) -> int:
    """The seed of chunk ``k``'s one generator, for samplers that cannot take per-sample seeds."""
    return _mix(_mix(seed * 0xBF58476D1CE4E5B9 + 0x2545F4914F6CDD1D) + k * 0x94D049BB133111EB) % (SEED_MAX + 1)


def chunk_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Rows ``[lo, hi)`` of the :math:`\\lceil n/B\\rceil` chunks of ``n`` samples, at most ``batch_size``
    each, sizes differing by at most one (the first ``n mod k`` are one longer); a function of
    ``n`` and ``batch_size`` only, never of the number of processes."""
    n, batch_size = check_int("n", n), check_int("batch_size", batch_size)
    k = math.ceil(n / batch_size)
    base, extra = divmod(n, k)
    bounds, lo = [], 0
    for j in range(k):
        hi = lo + base + (j < extra)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def per_sample_refusal(sde: SDE, sampler: str | Sampler, event_shape: Sequence[int], *,
                       dtype: torch.dtype | None = None, device=None, **options) -> str | None:
    """The sampler's own message when it runs with one seed but refuses per-sample seeds on ``sde``
    (a two-sample, one-step probe with a stand-in score); None when it takes them.

    The sampler is asked rather than looked up in a list, so samplers added later and options
    that change the answer (``pc`` with ``corrector="none"``) are handled as they are. When the
    probe fails either way the answer is None: the real call will report its own error.
    """
    shape = (2, *check_shape("event_shape", event_shape))

    def probe(seed):
        sample(lambda x, t: -x, sde, shape, sampler=sampler, steps=1, seed=seed, dtype=dtype, device=device,
               denoise=False, check_every=0, **options)

    try:
        probe([1, 2])
        return None
    except ScoreSDEError as err:
        refusal = str(err).splitlines()[0] if str(err) else type(err).__name__
    try:
        probe(1)
    except ScoreSDEError:
        return None
    return refusal


@dataclass(frozen=True)
class ChunkedSamples:
    """What :func:`sample_in_chunks` returns (the same on every rank).

    Attributes:
        x: the samples in seed order, ``(n, *event_shape)``, on the CPU.
        nfe: score evaluations of the most expensive chunk (each chunk makes the same number with
            a fixed-step sampler): the cost one sample went through.
        nfe_per_chunk: evaluations of each chunk, in chunk order.
        seeds: the per-sample seeds (``seeding == "per_sample"``), or None.
        chunk_seeds: the per-chunk seeds (``seeding == "per_chunk"``), or None.
        seeding: ``"per_sample"`` or ``"per_chunk"``.
        refusal: the sampler's message when it refused per-sample seeds, else None.
        bounds: rows ``[lo, hi)`` of each chunk.
        world_size: processes that shared the chunks.
        seconds: wall time of this rank's chunks plus the gather.
    """

    x: Tensor
    nfe: int
    nfe_per_chunk: list[int]
    seeds: list[int] | None
    chunk_seeds: list[int] | None
    seeding: str
    refusal: str | None
    bounds: list[tuple[int, int]]
    world_size: int
    seconds: float


_OWN = ("seed", "generator", "x_init", "x_start", "mask", "known", "return_trajectory")


def sample_in_chunks(score_fn, sde: SDE, shape: Sequence[int], *, seed: int = 0, batch_size: int = 256,
                     sampler: str | Sampler = "euler_maruyama", cond: Tensor | None = None,
                     device=None, dtype: torch.dtype | None = None, progress: bool = False,
                     **sample_kwargs) -> ChunkedSamples:
    """Draw ``shape[0]`` samples in chunks of at most ``batch_size`` with per-sample seeds,
    shared among the ranks of a process group when there is one (module doc).

    Args:
        score_fn, sde, sampler, device, dtype: as for :func:`scoresde.sample`.
        shape: ``(n, *event_shape)`` of the whole set.
        seed: the set's seed; sample ``i`` is seeded by :func:`sample_seed` ``(seed, i)``.
        batch_size: samples per :func:`~scoresde.sample` call (a chunk); the results may depend on
            it (module doc), never on the number of processes.
        cond: class labels, one per sample (``(n,)`` or ``(n, m)``), or one label for all.
        progress: a bar over this rank's chunks.
        **sample_kwargs: the rest of :func:`~scoresde.sample`'s arguments and the sampler's options
            (``steps``, ``guidance``, ``grid``, ``snr``, ...); not the seeding or per-sample inputs
            (``seed``, ``generator``, ``x_init``, ``x_start``, ``mask``, ``known``,
            ``return_trajectory``).

    In a group every rank must call it with the same arguments. A failure in any rank's chunk
    (a non-finite state, a bad score) is raised on every rank, with the failing rank's message.
    """
    bad = [k for k in _OWN if k in sample_kwargs]
    if bad:
        raise ArgumentError(f"sample_in_chunks seeds and splits the samples itself; it does not take {', '.join(bad)}")
    shape = check_shape("shape", shape)
    check_seed("seed", seed)
    n, event = shape[0], shape[1:]
    bounds = chunk_bounds(n, batch_size)
    options = {k: sample_kwargs.pop(k) for k in list(sample_kwargs) if k not in _SAMPLE_ARGS}  # the sampler's
    if isinstance(cond, Sequence) and not isinstance(cond, (str, bytes)):
        cond = torch.as_tensor(cond)  # one label per sample, sliced per chunk below
    if isinstance(cond, Tensor) and cond.dim() >= 1 and cond.shape[0] != n:
        raise ArgumentError(f"cond must hold one label per sample ({n}), got shape {tuple(cond.shape)}")
    refusal = per_sample_refusal(sde, sampler, event, dtype=dtype, device=device, **options)
    seeds = sample_seeds(seed, n) if refusal is None else None
    chunk_seeds = [chunk_seed(seed, k) for k in range(len(bounds))] if refusal is not None else None

    grouped = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)
    mine = list(range(rank, len(bounds), world))
    start = time.perf_counter()
    done: dict[int, tuple[Tensor, int]] = {}
    failure = None
    bar = None
    if progress and mine:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc=f"sample[{getattr(sampler, 'name', sampler)}] chunks")
    try:
        for k in mine:
            lo, hi = bounds[k]
            chunk_cond = cond[lo:hi] if isinstance(cond, Tensor) and cond.dim() >= 1 else cond
            res = sample(score_fn, sde, (hi - lo, *event), sampler=sampler,
                         seed=seeds[lo:hi] if seeds is not None else chunk_seeds[k],
                         cond=chunk_cond, device=device, dtype=dtype, **sample_kwargs, **options)
            done[k] = (res.x.detach().cpu(), int(res.nfe))
            if bar is not None:
                bar.update(1)
    except Exception as err:  # reported to every rank below, then raised
        if world == 1:
            raise
        failure = err
    finally:
        if bar is not None:
            bar.close()
    if world > 1:
        report = ("error", type(failure).__name__, str(failure).splitlines()[0] if str(failure) else "") \
            if failure is not None else ("ok", done)
        reports: list = [None] * world
        dist.all_gather_object(reports, report)
        if failure is not None:
            raise failure
        for r, rep in enumerate(reports):
            if rep[0] == "error":
                raise _peer_error(r, rep[1], rep[2])
        done = {k: v for rep in reports for k, v in rep[1].items()}
    x = torch.cat([done[k][0] for k in range(len(bounds))])
    nfe_per_chunk = [done[k][1] for k in range(len(bounds))]
    return ChunkedSamples(x=x, nfe=max(nfe_per_chunk), nfe_per_chunk=nfe_per_chunk, seeds=seeds,
                          chunk_seeds=chunk_seeds, seeding="per_sample" if seeds is not None else "per_chunk",
                          refusal=refusal, bounds=bounds, world_size=world, seconds=time.perf_counter() - start)


def _peer_error(rank: int, kind: str, message: str) -> Exception:
    """Another rank's failure, raised here: the same class where it is one of scoresde's."""
    from . import errors

    cls = getattr(errors, kind, None)
    text = f"rank {rank}: {message}"
    if isinstance(cls, type) and issubclass(cls, ScoreSDEError):
        try:
            return cls(text)
        except TypeError:  # an error class with more constructor arguments
            pass
    return ScoreSDEError(f"rank {rank} failed with {kind}: {message}")


def _sample_args() -> frozenset[str]:
    import inspect

    return frozenset(p for p in inspect.signature(sample).parameters if p != "options")


_SAMPLE_ARGS = _sample_args()
