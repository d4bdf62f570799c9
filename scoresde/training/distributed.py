r"""Data-parallel training across processes with ``torch.distributed`` (launched by ``torchrun``).

The :class:`~scoresde.training.Trainer` calls :func:`setup` at construction. Under
``torchrun`` (``WORLD_SIZE`` > 1 in the environment, with ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or when a process group is already initialised, it joins the
group (NCCL on CUDA, gloo on CPU) and training becomes data-parallel:

* ``batch_size`` is the *global* batch; rank :math:`r` of :math:`W` trains on rows
  :math:`[rB/W, (r+1)B/W)` of each global batch (:func:`shard_range`). The index stream is the
  single-process one, identical on every rank, so the union of the shards is exactly the
  single-process batch (what a ``DistributedSampler`` does, without its padding).
* Gradients are averaged by ``DistributedDataParallel``; with equal shards the average of the
  shard means is the global mean, so each step equals the single-process step up to the
  order of floating-point additions.

Nothing here manages processes: launching, rendezvous and tearing down a failed job belong to
``torchrun``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from ..errors import ArgumentError

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node).

    ``owns_group``: the process group was created by scoresde (and is destroyed by
    :func:`shutdown`); a group the user initialised is left to the user.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when gradients and results are exchanged between processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, CSVs and checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ArgumentError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return _env_int("WORLD_SIZE", 1)


def default_device() -> torch.device | None:
    """``cuda:LOCAL_RANK`` under torchrun on a CUDA machine, else None (the model's device)."""
    if env_world_size() > 1 and torch.cuda.is_available():
        return torch.device("cuda", _env_int("LOCAL_RANK", 0) % torch.cuda.device_count())
    return None


def setup(device: torch.device, *, timeout_s: float = 600.0) -> DistInfo:
    """Join (or create, from torchrun's variables) the default process group.

    Returns a single-process :class:`DistInfo` when there is neither a group nor a torchrun
    environment with ``WORLD_SIZE > 1``. The backend is NCCL when ``device`` is CUDA, gloo
    otherwise; ``timeout_s`` bounds every collective (a rank that died leaves the others
    waiting at most that long when no launcher tears the job down).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), owns_group=False)
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ArgumentError(f"WORLD_SIZE={world} is set but {', '.join(missing)} are not; launch with torchrun")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ArgumentError(f"RANK must lie in [0, WORLD_SIZE={world}), got {rank}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def shutdown(info: DistInfo, *, sync: bool = True) -> None:
    """Destroy the process group if scoresde created it (idempotent).

    ``sync``: first wait for every rank at a barrier, so no rank tears down its connections
    while a peer still finishes the last collective (gloo aborts the peer otherwise). On an
    error path pass False: a dead peer would never reach the barrier.
    """
    if info.owns_group and dist.is_initialized():
        if sync and info.enabled:
            dist.barrier()
        dist.destroy_process_group()


def shard_range(global_batch: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch that ``rank`` trains on (equal contiguous shards)."""
    if global_batch % world_size:
        raise ArgumentError(
            f"batch_size must be divisible by the number of processes ({world_size}), got {global_batch}; "
            f"batch_size is the global batch (each process takes batch_size / {world_size})"
        )
    per = global_batch // world_size
    return rank * per, (rank + 1) * per


def rank_seed(seed: int, rank: int, step: int) -> int:
    """A seed for ``rank`` at ``step`` derived from the run seed (distinct across ranks and steps).

    Used for the loss noise when the loss cannot draw the global batch's noise itself (see
    :class:`~scoresde.training.Trainer`): stateless, so a resumed run draws the same values.
    """
    # splitmix64-style mixing of the three integers: nearby inputs give unrelated seeds
    z = (seed * 0x9E3779B97F4A7C15 + rank * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) % 2**63


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a scalar over ranks (identical on every rank); NaN anywhere gives NaN everywhere."""
    if not info.enabled:
        return value
    v = value.detach().clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return v / info.world_size


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class _Dispatch(torch.nn.Module):
    """Routes ``forward(x, t, method)`` to ``module.method(x, t)`` so that every model call a loss
    makes (``model(x, t)``, ``model.eps(x, t)``, ...) passes through DDP's forward, which is
    what arms the gradient all-reduce for the backward pass."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x, t, method: str = "__call__", **kwargs):  # kwargs: e.g. class labels y=
        return self.module(x, t, **kwargs) if method == "__call__" else getattr(self.module, method)(x, t, **kwargs)


_MODULE_NAMES = frozenset(dir(torch.nn.Module))


class DDPView:
    """What the loss sees in a distributed run: the model's interface, executed through DDP.

    Calling it, or any method the model's class adds to ``nn.Module`` (``eps``, ...), runs
    ``ddp(x, t, method)``; attributes that are not methods (``sde``, ``config``) are the model's.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device):
        from torch.nn.parallel import DistributedDataParallel

        self.module = module
        ids = [device] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_Dispatch(module), device_ids=ids)

    def __call__(self, x, t, **kwargs):
        return self.ddp(x, t, **kwargs)

    def __getattr__(self, name: str):
        attr = getattr(self.module, name)
        if callable(attr) and name not in _MODULE_NAMES and not name.startswith("_") and hasattr(type(self.module), name):
            return lambda x, t, **kwargs: self.ddp(x, t, name, **kwargs)
        return attr
