r"""``load_run``: a trained run back as a model, its SDE, its configuration and its step.

A run is a run folder (its newest checkpoint that verifies is read), a checkpoint file
(``step_*.ckpt``) or a ``.safetensors`` export (:meth:`Run.save_safetensors`). What is
rebuilt comes from the configuration the run recorded, through fixed tables of built-in names
(:mod:`scoresde.models.specs`): the built-in SDEs (``VPSDE`` including ``schedule="cosine"``,
``SubVPSDE``, ``VESDE``) and networks (``MLP``, ``UNet``) inside a
:class:`~scoresde.models.ScoreModel`. Nothing in a file can make anything be imported: a run
trained with a user's SDE class needs that SDE passed as ``sde=``, one with a user's network
the model passed as ``model=`` (built as it was for training; its weights are loaded).

Example::

    run = ss.load_run("runs/toy2d")                    # EMA weights, eval mode, on the CPU
    res = ss.sample(run.model, run.sde, (500, *run.data_shape), sampler="dpm_solver", steps=20)
    run.save_safetensors("weights.safetensors")        # for other tools; the config as metadata
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import atomic_write_bytes
from ..errors import ArgumentError, CheckpointError, check_bool, check_device
from ..models import ScoreModel
from ..models.specs import build_sde, is_custom
from ..sde import SDE
from .checkpoint import FORMAT_VERSION, check_training_state, list_checkpoints, load_checkpoint, load_weights
from .run_folder import CHECKPOINTS

SAFETENSORS_SUFFIX = ".safetensors"


@dataclasses.dataclass
class Run:
    """A trained run, loaded by :func:`load_run`.

    Attributes:
        model: the score model, in eval mode with gradients off (``model(x, t)`` is the score).
        sde: its forward SDE (``model.sde`` for a :class:`~scoresde.models.ScoreModel`).
        config: the run's recorded configuration (``train``, ``model``, ``loss``, ``data``,
            ``metadata``, ...), as in its ``config.json``.
        step: the optimiser steps the weights have seen.
        path: the file the weights were read from.
        weights: ``"ema"`` (the averaged weights) or ``"raw"``.
    """

    model: nn.Module
    sde: SDE | None
    config: dict[str, Any]
    step: int
    path: Path
    weights: str = "ema"

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        """The shape of one training sample (None when the run did not record it)."""
        shape = self.config.get("data", {}).get("shape")
        return tuple(shape) if isinstance(shape, list) else None

    @property
    def metadata(self) -> dict[str, Any]:
        """What the trainer was given as ``metadata`` (e.g. the command line's data spec)."""
        meta = self.config.get("metadata")
        return meta if isinstance(meta, dict) else {}

    def save_safetensors(self, path: str | os.PathLike) -> Path:
        """Write the weights as a safetensors file, atomically; the configuration, the step and
        which weights they are go into its metadata (``safetensors.torch.load_file`` reads the
        tensors back; :func:`load_run` the whole run)."""
        from safetensors.torch import save

        # copies: safetensors refuses tensors that share memory (tied weights)
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in self.model.state_dict().items()}
        metadata = {"format": "scoresde", "format_version": str(FORMAT_VERSION), "step": str(self.step),
                    "weights": self.weights, "config": json.dumps(self.config)}
        return atomic_write_bytes(path, save(tensors, metadata=metadata))


def _newest_valid(folder: Path) -> tuple[dict[str, Any], Path]:
    found = list_checkpoints(folder / CHECKPOINTS)
    if not found:
        raise CheckpointError(f"run folder {str(folder)!r} holds no checkpoint ({CHECKPOINTS}/step_*.ckpt)")
    for step, path in reversed(found):
        try:
            return load_checkpoint(path, map_location="cpu"), path
        except CheckpointError as err:  # damaged (e.g. a write cut short): the previous one
            warnings.warn(f"skipping checkpoint at step {step}: {err}", stacklevel=3)
    raise CheckpointError(f"run folder {str(folder)!r}: none of its {len(found)} checkpoints verifies")


def _read_safetensors(path: Path, ema: bool) -> tuple[dict[str, Any], dict[str, Any], int]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {err}") from None
    if meta.get("format") != "scoresde":
        raise CheckpointError(f"{str(path)!r} is a safetensors file without scoresde metadata (not exported by scoresde)")
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) != FORMAT_VERSION:
        newer = version.isdigit() and int(version) > FORMAT_VERSION
        raise CheckpointError(f"{str(path)!r} has format_version {version!r}; this scoresde reads {FORMAT_VERSION}"
                              + ("; upgrade scoresde to load it" if newer else ""))
    if ema != (meta.get("weights") == "ema"):
        raise CheckpointError(f"{str(path)!r} holds the {meta.get('weights')} weights only; pass ema={not ema}")
    try:
        config = json.loads(meta["config"])
        step = int(meta["step"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{str(path)!r}: its scoresde metadata is incomplete (config, step)") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(path)!r}: its recorded config must be a mapping")
    return tensors, config, step


def load_run(
    path: str | os.PathLike,
    *,
    sde: SDE | Callable[[dict[str, Any]], SDE] | None = None,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    ema: bool = True,
) -> Run:
    """Load a trained run: a run folder (its newest valid checkpoint), a checkpoint file, or a
    ``.safetensors`` export.

    Args:
        path: the run folder or file.
        sde: the forward SDE, required when the run used an SDE that is not built in (its
            class is named in the error); it replaces the recorded SDE otherwise. Also a
            function ``config -> SDE``, called with the run's recorded configuration (to build
            a class with arguments the run recorded).
        model: a model built as for training, for a network that is not built in; its
            weights are replaced by the run's.
        device: where to put the model.
        ema: the averaged weights (default) or, with False, the raw trained weights.

    Returns:
        :class:`Run` (``run.model`` in eval mode with gradients off).

    Raises:
        CheckpointError: a missing, damaged or foreign file; an unknown or newer
            ``format_version``; weights of another architecture; an SDE or network that is
            not built in and was not passed.
    """
    device = check_device("device", device)
    check_bool("ema", ema)
    if sde is not None and not isinstance(sde, SDE) and not callable(sde):
        raise ArgumentError(f"sde must be a scoresde.SDE or a function config -> SDE, got {type(sde).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run {str(path)!r} does not exist (give a run folder or a checkpoint file)")
    if path.is_dir():
        state, path = _newest_valid(path)
    elif path.suffix == SAFETENSORS_SUFFIX:
        state = None
        weights, config, step = _read_safetensors(path, ema)
    else:
        state = load_checkpoint(path, map_location="cpu")
    if state is not None:
        config = check_training_state(state, path)
        step = int(state["step"])
        averaged = state["ema"].get("model") if isinstance(state["ema"], dict) else None
        weights = averaged if ema else state["model"]
    where = f"checkpoint {str(path)!r}"
    if sde is not None and not isinstance(sde, SDE):
        sde = sde(config)
        if not isinstance(sde, SDE):
            raise ArgumentError(f"the sde function must return a scoresde.SDE, got {type(sde).__name__}")
    model_config = config.get("model")
    try:
        if model is None:
            if not (isinstance(model_config, dict) and model_config.get("type") == "ScoreModel"):
                raise ArgumentError(
                    f"the run's model ({str(model_config)[:60]}) is not a ScoreModel of a built-in network; "
                    f"build it as for training and pass it as model="
                )
            with torch.random.fork_rng(devices=[]):  # initialising layers must not move the caller's RNG
                model = ScoreModel.from_config(model_config, sde=sde)
        if sde is None:
            sde = getattr(model, "sde", None)
        if sde is None and isinstance(model_config, dict) and not is_custom(model_config.get("sde")):
            sde = build_sde(model_config.get("sde"))
    except ArgumentError as err:
        raise CheckpointError(f"{where}: {err}") from None
    load_weights(model, weights, where)
    model = model.to(device).eval().requires_grad_(False)
    return Run(model, sde, config, step, path, "ema" if ema else "raw")
