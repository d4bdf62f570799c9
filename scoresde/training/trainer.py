r"""The training loop: AdamW with warm-up, clipping, EMA, AMP, logs, evaluation and checkpoints.

One step minimises the mean of a per-sample loss (e.g. :class:`~scoresde.training.DSMLoss`)
over a batch drawn from the data:

1. indices from a seeded permutation of the data set (a new one each epoch);
2. ``loss_fn(model, x0, generator)`` under autocast when ``amp`` is on (CUDA only);
3. a non-finite loss stops training with :class:`TrainingDivergedError` naming the step; no
   checkpoint is written, so the last good one stays the newest;
4. backward, gradient-norm clipping, AdamW step, learning-rate schedule (linear warm-up, then
   constant or cosine decay), EMA update.

**Class-conditional models.** When the model has a ``num_classes`` (e.g.
``ScoreModel(..., num_classes=K)``), the data must carry labels (see
:class:`~scoresde.training.batches._Batches`), checked once to lie in ``[0, K)``, and step 2 is
``loss_fn(model, x0, generator, y=labels)`` with the labels of the same rows (label dropout for
classifier-free guidance is the loss's, e.g. ``DSMLoss(sde, label_dropout=0.1)``). A model
without ``num_classes`` trains as before, whatever labels the data carry.

All randomness comes from generators seeded by ``seed`` (data order; the loss's noise and
times) plus the global RNG (e.g. dropout), and every one of their states is in the
checkpoint, so a run resumed from a checkpoint reproduces the uninterrupted run exactly on
the CPU (on GPUs up to the nondeterminism of some kernels).

Outputs in ``out_dir`` (the run folder, :mod:`scoresde.training.run_folder`): ``config.json``,
``metrics.csv`` (step, loss, grad_norm, lr, seconds), ``eval.csv`` (the eval hook's numbers),
``checkpoints/step_<8-digit step>.ckpt`` and TensorBoard events when the ``tensorboard`` package
is installed. Nothing is written before the folder has been checked: a new run (:meth:`start`,
which :meth:`fit` calls) refuses a folder that holds a run, a resumed run (:meth:`resume`)
refuses a changed configuration, and a folder another process trains in is refused; the lock
is held while training. :func:`~scoresde.training.load_run` reloads a run.

**Several processes** (``torchrun``; see :mod:`scoresde.training.distributed` and
docs/distributed.md): the model is wrapped in ``DistributedDataParallel`` and each rank trains
on its shard of every global batch of ``batch_size`` samples. What equals the single-process
run: the data order; the loss noise and times when the loss accepts ``shard=`` (as
:class:`~scoresde.training.DSMLoss` does: every rank draws the global batch's noise from the
shared stream and keeps its rows); a data set's ``train_batch`` randomness (every rank fetches
the global batch and keeps its rows); hence the losses and weights up to float rounding. What
does not: losses without ``shard=`` (e.g. sliced score matching) draw per-rank noise seeded by
:func:`~scoresde.training.distributed.rank_seed` (same distribution, other values) and the
global RNG (dropout) is seeded per rank. Only rank 0 writes files; a NaN on any rank stops
every rank at the same step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import (
    ArgumentError,
    CheckpointError,
    RunFolderError,
    TrainingDivergedError,
    check_device,
    check_labels,
)
from . import distributed as _dist
from .batches import _Batches, _describe
from .checkpoint import (
    FORMAT_VERSION,
    check_training_state,
    checkpoint_path,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .config import RESUMABLE_FIELDS, TrainConfig
from .ema import EMA
from .run_folder import RunFolder, config_differences, summarise
from .run_log import RunLog

_RESUMABLE = ", ".join(RESUMABLE_FIELDS) + " and, with the constant lr_schedule, steps"


class Trainer:
    r"""Trains ``model`` by minimising ``loss_fn`` on ``data``.

    Args:
        model: an ``nn.Module`` score model, e.g. :class:`~scoresde.models.ScoreModel`.
        loss_fn: ``loss_fn(model, x0, generator) -> (batch,)`` per-sample losses, e.g.
            :class:`~scoresde.training.DSMLoss` or :class:`~scoresde.training.SlicedScoreMatchingLoss`.
        data: a Tensor of samples ``(N, ...)`` or a map-style torch Dataset (see ``scoresde.data``).
        out_dir: where logs and checkpoints go (None: nothing is written, no checkpoints).
        eval_fn: evaluation hook ``eval_fn(trainer) -> dict[str, float]`` run every
            ``eval_every`` steps (e.g. held-out likelihood of ``trainer.ema.model``).
        device: where to train (default: the model's device).
        metadata: JSON-serialisable facts about the run to record with it (``config.json`` and
            every checkpoint, under ``"metadata"``), e.g. how the data were made; a resumed run
            must pass the same.
        config: a :class:`TrainConfig`; keyword arguments override its fields.

    ``fit()`` trains up to ``config.steps`` steps, in a new run folder unless ``resume()``
    first continued the run in it. The averaged model is ``trainer.ema.model``. Construction
    writes nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Tensor, torch.Generator], Tensor],
        data,
        out_dir: str | Path | None = None,
        *,
        eval_fn: Callable[[Trainer], dict[str, float]] | None = None,
        device: str | torch.device | None = None,
        metadata: dict[str, Any] | None = None,
        config: TrainConfig | None = None,
        **overrides,
    ):
        if not isinstance(model, nn.Module):
            raise ArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ArgumentError(f"loss_fn must be callable loss_fn(model, x0, generator), got {type(loss_fn).__name__}")
        if eval_fn is not None and not callable(eval_fn):
            raise ArgumentError(f"eval_fn must be callable eval_fn(trainer), got {type(eval_fn).__name__}")
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        for key in overrides:
            if key not in fields:
                raise ArgumentError(f"unknown Trainer option {key!r}; valid options are: {', '.join(fields)}")
        if config is not None and not isinstance(config, TrainConfig):
            raise ArgumentError(f"config must be a TrainConfig, got {type(config).__name__}")
        if metadata is not None and not isinstance(metadata, dict):
            raise ArgumentError(f"metadata must be a dict of JSON values, got {type(metadata).__name__}")
        cfg = dataclasses.replace(config or TrainConfig(), **overrides).validate()
        params = list(model.parameters())
        if not params:
            raise ArgumentError("model has no parameters to train")
        if device is None:
            device = _dist.default_device()
        self.device = check_device("device", device) if device is not None else params[0].device
        if cfg.amp and self.device.type != "cuda":
            raise ArgumentError(f"amp=True needs a CUDA device (mixed precision is CUDA-only here), got device {self.device}")
        self.config = cfg
        self.dist = _dist.setup(self.device)
        # the global batch is the user-facing number; each rank takes rows [start, stop)
        self._shard = _dist.shard_range(cfg.batch_size, self.dist.rank, self.dist.world_size)
        self.model = model.to(self.device)
        # what the loss calls: the model itself, or a view that runs it through DDP (whose
        # constructor broadcasts rank 0's weights, so this precedes the EMA copy)
        self._loss_model = _dist.DDPView(self.model, self.device) if self.dist.enabled else self.model
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_folder = RunFolder(self.out_dir) if self.out_dir is not None else None
        self.metadata = copy.deepcopy(metadata) if metadata is not None else {}
        self.step = 0
        self.last_checkpoint: Path | None = None
        self._opened = False  # start() or resume() has checked the run folder
        self._writing = False  # the folder is claimed (its lock held by rank 0) for writes

        # global RNG: dropout and anything the loss draws without a generator (per rank in a group)
        torch.manual_seed(cfg.seed if self.dist.rank == 0 else _dist.rank_seed(cfg.seed, self.dist.rank, 0))
        self.batches = _Batches(data, cfg.seed)
        self.num_classes = self._check_labels(model, loss_fn)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self._rank_generator = torch.Generator(device=self.device)  # re-seeded per step, see train_step
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: cfg.lr_factor(s))
        self.ema = EMA(self.model, cfg.ema_decay)
        self._amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and cfg.amp_dtype == "float16")
        self._param_dtype = params[0].dtype
        self._check_data_against_model()
        self._shardable = bool(getattr(loss_fn, "shardable", False))
        self.run_log = RunLog(self.out_dir, writer=self.dist.is_main, tensorboard=cfg.tensorboard)
        try:
            json.dumps(self.config_dict())
        except (TypeError, ValueError) as err:
            raise ArgumentError(f"the run's configuration must be JSON-serialisable (model.config, loss_fn.config, "
                                f"metadata): {err}") from None

    # ---- set-up checks and configuration ---------------------------------------------------
    def _check_labels(self, model: nn.Module, loss_fn: Callable) -> int | None:
        """The model's number of classes (None: unconditional), with the data's labels and the loss checked."""
        k = getattr(model, "num_classes", None)
        if not isinstance(k, int) or isinstance(k, bool):
            return None
        data = _describe(self.batches.data)
        if not self.batches.has_labels:
            raise ArgumentError(
                f"the model is class-conditional (num_classes={k}) but the data ({data}) carry no class labels: "
                f"give labelled data, e.g. TensorData(x, labels=y) or digits_dataset()"
            )
        if self.batches.labels is not None:  # all of them, once (item-by-item labels: per batch)
            check_labels("labels", self.batches.labels, k, batch=self.batches.n)
        try:
            params = inspect.signature(loss_fn).parameters.values()
        except (TypeError, ValueError):
            params = None
        if params is not None and not any(p.name == "y" or p.kind is p.VAR_KEYWORD for p in params):
            raise ArgumentError(
                f"loss_fn must take the class labels as loss_fn(model, x0, generator, y=labels) to train a "
                f"class-conditional model (num_classes={k}); {type(loss_fn).__name__} has no argument y"
            )
        return k

    def _labels(self, idx: Tensor) -> Tensor:
        y = check_labels("labels", self.batches.fetch_labels(idx), self.num_classes, batch=idx.shape[0])
        return y.to(self.device, non_blocking=True)

    def _check_data_against_model(self) -> None:
        idx = torch.arange(min(2, self.batches.n))
        x = self._to_device(self.batches.fetch(idx, torch.Generator().manual_seed(0)))
        labels = {} if self.num_classes is None else {"y": self._labels(idx)}
        was_training = self.model.training
        self.model.eval()  # no dropout draws: the check must not touch the RNG streams
        try:
            with torch.no_grad():
                t = torch.full((x.shape[0],), 0.5, dtype=x.dtype, device=x.device)
                sde = getattr(self.model, "sde", None)
                if sde is not None:
                    t = t * sde.T
                out = self.model(x, t, **labels)
        except Exception as err:
            raise ArgumentError(
                f"the model rejects the data: a batch of shape {tuple(x.shape)} from {_describe(self.batches.data)} "
                f"raised {type(err).__name__}: {err}"
            ) from err
        finally:
            self.model.train(was_training)
        if isinstance(out, Tensor) and out.shape != x.shape:
            raise ArgumentError(f"the model maps data of shape {tuple(x.shape)} to shape {tuple(out.shape)}; expected the same")
        self._sample_shape = list(x.shape[1:])

    def config_dict(self) -> dict[str, Any]:
        """Everything needed to describe the run, as JSON-serialisable values.

        ``model`` is the model's ``config`` (for a :class:`~scoresde.models.ScoreModel`, the
        specs :func:`~scoresde.training.load_run` rebuilds it from); ``data.shape`` the shape of
        one sample.
        """
        return {
            "format_version": FORMAT_VERSION,
            "train": dataclasses.asdict(self.config),
            "model": getattr(self.model, "config", type(self.model).__name__),
            "loss": getattr(self.loss_fn, "config", type(self.loss_fn).__name__),
            "data": {"type": _describe(self.batches.data), "size": self.batches.n, "shape": self._sample_shape},
            "world_size": self.dist.world_size,
            "metadata": self.metadata,
        }

    def _to_device(self, x: Tensor) -> Tensor:
        return x.to(device=self.device, dtype=self._param_dtype, non_blocking=True)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "loss_generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format_version": FORMAT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.batches.state_dict(),
            "rng": rng,
            "config_json": json.dumps(self.config_dict()),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore a :meth:`state_dict` (``source`` names where it comes from, for messages).

        Weights of another architecture raise :class:`CheckpointError` in one line.
        """
        try:
            load_weights(self.model, state["model"], source)
            self.ema.load_state_dict(state["ema"], source=f"{source} (EMA)")
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            self.batches.load_state_dict(state["data"])
            # RNG states are CPU byte tensors whatever map_location moved them to
            self.generator.set_state(state["rng"]["loss_generator"].cpu())
            self._load_local_rng(state["rng"], int(state["step"]))
            self.step = int(state["step"])
        except CheckpointError:
            raise
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CheckpointError(f"{source} does not match this trainer/model: {type(err).__name__}: {first}") from None

    def _local_rng(self) -> dict[str, Tensor]:
        """This process's global RNG states (the index and loss streams are shared by all ranks)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _load_local_rng(self, rng: dict[str, Any], step: int) -> None:
        # RNG states are CPU byte tensors whatever map_location moved them to
        mine = rng
        per_rank = rng.get("per_rank")
        if self.dist.enabled:
            if per_rank is not None and len(per_rank) == self.dist.world_size:
                mine = per_rank[self.dist.rank]
            elif self.dist.rank != 0:  # written by another number of processes: derive a fresh seed
                torch.manual_seed(_dist.rank_seed(self.config.seed, self.dist.rank, step))
                return
        torch.set_rng_state(mine["torch"].cpu())
        if "cuda" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"].cpu(), self.device)

    def save(self) -> Path:
        """Write a checkpoint for the current step and prune old ones (keeps ``keep_checkpoints``).

        In a process group every rank calls it (each rank's RNG state is gathered into the
        file); rank 0 alone writes, then all ranks wait at a barrier so that no rank runs ahead
        of a checkpoint that is not on disk yet.
        """
        if self.out_dir is None:
            raise ArgumentError("out_dir is None: this trainer writes no checkpoints")
        state = self.state_dict()
        if self.dist.enabled:
            state["rng"]["per_rank"] = _dist.gather_objects(self._local_rng(), self.dist)
        with self._folder_writes():
            folder = self.run_folder
            path = checkpoint_path(folder.checkpoint_dir, self.step)
            if self.dist.is_main:
                save_checkpoint(state, path, follow_dir_link=False)
                for _, old in folder.checkpoints()[: -self.config.keep_checkpoints]:
                    old.unlink(missing_ok=True)
            _dist.barrier(self.dist)
        self.last_checkpoint = path
        return path

    def load(self, path: str | Path) -> None:
        """Load the checkpoint at ``path`` (verified, see :func:`~scoresde.training.load_checkpoint`).

        Its recorded configuration must be this trainer's up to what a resumed run may change
        (:func:`~scoresde.training.run_folder.config_differences`), else :class:`CheckpointError`
        says what differs.
        """
        state = load_checkpoint(path, map_location=self.device)
        recorded = check_training_state(state, path)
        diffs = config_differences(recorded, self.config_dict())
        if diffs:
            raise CheckpointError(f"checkpoint {str(path)!r} was written with another configuration: {summarise(diffs)}")
        self.load_state_dict(state, source=f"checkpoint {str(path)!r}")
        self.last_checkpoint = Path(path)

    # ---- the run folder --------------------------------------------------------------------
    def start(self) -> None:
        """Begin a new run in ``out_dir``: check the folder, take its lock, write ``config.json``.

        Refuses (:class:`RunFolderError`, nothing written) a folder that already holds a run --
        continue that with :meth:`resume` -- or that another process trains in. :meth:`fit`
        calls it when neither this nor :meth:`resume` was called. The lock is held until
        :meth:`fit` returns (or :meth:`close`).
        """
        folder = self._folder("start")

        def on_rank0() -> None:
            folder.claim(folder.check_free)
            self._begin_writes(folder, truncate_after=None)

        self._on_rank0(on_rank0)
        self._opened = self._writing = True

    def resume(self) -> int:
        """Continue the run in ``out_dir`` from its newest valid checkpoint; returns its step (0 if none).

        A checkpoint that fails verification (truncated, altered) is reported with a warning
        and skipped, so an interrupted write falls back to the previous checkpoint. Everything
        else that stops the run from continuing exactly is refused before anything is written:
        a configuration that differs from the recorded one in a field that changes the updates
        (:class:`RunFolderError` naming each, e.g. ``train.lr: 0.0002 -> 0.05``), weights of
        another architecture or a checkpoint of another format version (:class:`CheckpointError`),
        a folder another process trains in. The lock is held until :meth:`fit` returns (or
        :meth:`close`). In a process group rank 0 checks and chooses, and every rank loads the
        same file (``out_dir`` must be on a file system all nodes see).
        """
        folder = self._folder("resume")

        def on_rank0() -> str | None:
            state, path = folder.claim(lambda: self._choose_checkpoint(folder))
            try:
                if state is not None:
                    self.load_state_dict(state, source=f"checkpoint {str(path)!r}")
                self._begin_writes(folder, truncate_after=self.step)
            except BaseException:
                folder.release()
                raise
            return None if path is None else str(path)

        chosen = self._on_rank0(on_rank0)
        self._opened = self._writing = True
        if chosen is not None and not self.dist.is_main:
            try:
                self.load(chosen)
            except CheckpointError as err:
                raise CheckpointError(
                    f"rank {self.dist.rank} cannot load the checkpoint rank 0 resumed from ({err}); "
                    f"out_dir must be on a file system shared by all nodes"
                ) from err
        if chosen is not None:
            self.last_checkpoint = Path(chosen)
        return self.step

    def _folder(self, what: str) -> RunFolder:
        if self.run_folder is None:
            raise ArgumentError(f"out_dir is None: there is no run folder to {what}")
        if self._opened:
            raise RunFolderError(f"this trainer has already started its run in {str(self.out_dir)!r}; "
                                 f"call {what}() on a new Trainer")
        return self.run_folder

    def _choose_checkpoint(self, folder: RunFolder) -> tuple[dict[str, Any] | None, Path | None]:
        """The newest checkpoint that verifies (read only), checked against this trainer's config."""
        mine = self.config_dict()
        for step, path in reversed(folder.checkpoints()):
            try:
                state = load_checkpoint(path, map_location=self.device)
            except CheckpointError as err:  # damaged: fall back to the previous one
                warnings.warn(f"skipping checkpoint at step {step}: {err}", stacklevel=4)
                continue
            self._refuse_differences(folder, check_training_state(state, path), mine)
            return state, path
        recorded = folder.read_config()  # killed before its first checkpoint: still the same run?
        if recorded is not None:
            self._refuse_differences(folder, recorded, mine)
        return None, None

    @staticmethod
    def _refuse_differences(folder: RunFolder, recorded: dict[str, Any], mine: dict[str, Any]) -> None:
        diffs = config_differences(recorded, mine)
        if diffs:
            raise RunFolderError(
                f"cannot resume run folder {str(folder.path)!r} with another configuration: {summarise(diffs)} "
                f"(on resume only {_RESUMABLE} may change); train into another folder instead"
            )

    def _begin_writes(self, folder: RunFolder, truncate_after: int | None) -> None:
        """With the lock held: create the layout, drop stale temporaries and log rows, write config.json."""
        try:
            folder.prepare()
            if truncate_after is not None:
                self.run_log.truncate_after(truncate_after)
            folder.write_config(self.config_dict())
        except BaseException:
            folder.release()
            raise

    def _reclaim(self) -> None:
        """Take the lock again for writes after an earlier fit() released it."""
        folder = self.run_folder

        def check() -> None:
            # the folder must still be this run, not moved on by another process meanwhile
            recorded = folder.read_config()
            ckpts = folder.checkpoints()
            if recorded is None or config_differences(recorded, self.config_dict()) or (ckpts and ckpts[-1][0] > self.step):
                raise RunFolderError(
                    f"run folder {str(folder.path)!r} changed since this trainer last wrote to it (another process "
                    f"trained in it); resume it with a new Trainer"
                )

        self._on_rank0(lambda: folder.claim(check))
        self._writing = True

    def _release(self) -> None:
        if self.run_folder is not None:
            self.run_folder.release()
        self._writing = False

    @contextlib.contextmanager
    def _folder_writes(self):
        """Hold the run folder's lock around writes made outside fit() (starting the run if new)."""
        if self.run_folder is None or self._writing:
            yield
            return
        if not self._opened:
            self.start()
        else:
            self._reclaim()
        try:
            yield
        finally:
            self._release()

    def _on_rank0(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 alone (the one process that touches the run folder); every rank
        returns its result, or raises its error."""
        if not self.dist.enabled:
            return fn()
        outcome, error = None, None
        if self.dist.is_main:
            try:
                outcome = ("ok", fn())
            except Exception as err:
                error = err
                outcome = ("error", type(err).__name__, (str(err).splitlines() or [type(err).__name__])[0])
        outcome = _dist.broadcast_object(outcome, self.dist)
        if error is not None:
            raise error
        if outcome[0] == "error":
            cls = CheckpointError if outcome[1] == "CheckpointError" else RunFolderError
            raise cls(outcome[2])
        return outcome[1]

    # ---- the loop --------------------------------------------------------------------------
    def train_step(self) -> tuple[Tensor, Tensor]:
        """One optimisation step; returns the (detached) loss and gradient norm.

        In a process group the loss is the mean over all ranks (the global batch's loss) and
        is the same number on every rank.
        """
        cfg = self.config
        idx = self.batches.indices(cfg.batch_size)
        start, stop = self._shard
        if self.dist.enabled and self.batches.draws_randomness:
            # the data set draws from the shared stream: fetch the global batch on every rank
            # so that the stream stays where a single process would have it
            x0 = self.batches.fetch(idx, self.generator)[start:stop]
        else:
            x0 = self.batches.fetch(idx[start:stop], self.generator)
        x0 = self._to_device(x0)
        labels = {} if self.num_classes is None else {"y": self._labels(idx[start:stop])}
        self.model.train()
        with torch.autocast(self.device.type, dtype=self._amp_dtype, enabled=cfg.amp):
            if not self.dist.enabled:
                losses = self.loss_fn(self.model, x0, self.generator, **labels)
            elif self._shardable:  # the loss draws the global batch's noise and keeps our rows
                losses = self.loss_fn(self._loss_model, x0, self.generator, shard=(start, cfg.batch_size), **labels)
            else:
                gen = self._rank_generator.manual_seed(_dist.rank_seed(cfg.seed + 1, self.dist.rank, self.step))
                losses = self.loss_fn(self._loss_model, x0, gen, **labels)
        if not isinstance(losses, Tensor) or losses.dim() > 1:
            raise ArgumentError(f"loss_fn must return per-sample losses of shape (batch,), got {getattr(losses, 'shape', losses)}")
        # reduce in at least float32 (half-precision losses under autocast), keep float64 as is
        loss = losses.mean() if losses.dtype in (torch.float32, torch.float64) else losses.float().mean()
        # the global loss: a NaN on any rank reaches every rank, so all of them stop together
        global_loss = _dist.all_mean(loss.detach(), self.dist)
        if not bool(torch.isfinite(global_loss)):
            raise TrainingDivergedError(self._diverged("loss", global_loss))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not self.scaler.is_enabled() and not bool(torch.isfinite(gnorm)):
            raise TrainingDivergedError(self._diverged("gradient norm", gnorm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        return global_loss, gnorm.detach()

    def _diverged(self, what: str, value: Tensor) -> str:
        last = f"the last good checkpoint is {str(self.last_checkpoint)!r}" if self.last_checkpoint else "no checkpoint was written"
        return (
            f"training diverged: the {what} is {float(value.detach())} at step {self.step + 1} "
            f"(after {self.step} completed steps); stopped without saving, {last}"
        )

    def evaluate(self) -> dict[str, float]:
        """Run the eval hook now and log its numbers (with the step) to ``eval.csv``."""
        if self.eval_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad():
            result = self.eval_fn(self)
        if not isinstance(result, dict):
            raise ArgumentError(f"eval_fn must return a dict of numbers, got {type(result).__name__}")
        row = {"step": self.step, **{k: float(v) for k, v in result.items()}}
        with self._folder_writes():
            self.run_log.write("eval.csv", row)
        return result

    def fit(self, steps: int | None = None) -> Trainer:
        """Train until ``steps`` (default ``config.steps``) completed steps; returns ``self``.

        With an ``out_dir`` it first starts a new run there (:meth:`start`) unless :meth:`resume`
        continued one, and holds the folder's lock until it returns.
        """
        cfg = self.config
        total = cfg.steps if steps is None else steps
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ArgumentError(f"steps must be a non-negative integer, got {total!r}")
        if self.run_folder is not None and not self._writing:
            try:
                if self._opened:
                    self._reclaim()
                else:
                    self.start()
            except BaseException:
                _dist.shutdown(self.dist, sync=False)
                raise
        self.run_log.open()
        bar = tqdm(total=total, initial=min(self.step, total), disable=not (cfg.progress and self.dist.is_main),
                   desc="training", dynamic_ncols=True)
        start = time.perf_counter()
        loss_sum, count = 0.0, 0
        try:
            while self.step < total:
                loss, gnorm = self.train_step()
                loss_sum += float(loss)
                count += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == total:
                    row = {
                        "step": self.step,
                        "loss": loss_sum / count,
                        "grad_norm": float(gnorm),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - start,
                    }
                    self.run_log.write("metrics.csv", row)
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                    loss_sum, count = 0.0, 0
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if self.out_dir is not None and (
                    (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step == total
                ):
                    self.save()
        except BaseException:
            # a failed rank leaves the group cleanly; torchrun stops the others
            _dist.shutdown(self.dist, sync=False)
            raise
        finally:
            bar.close()
            self.run_log.flush()
            self._release()
        return self

    def close(self) -> None:
        """Release the run folder and destroy the process group if this trainer created it.

        In a process group every rank calls it (it synchronises at a barrier first).
        """
        self._release()
        _dist.shutdown(self.dist)
