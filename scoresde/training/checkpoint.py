r"""Verified checkpoint files, and the versioned training state they hold.

A checkpoint file is a short header followed by a ``torch.save`` payload::

    SCORESDE-CKPT v1\n
    <sha256 of the payload, 64 hex digits>\n
    <payload>

It is written atomically (:func:`~scoresde._files.atomic_write`: an exclusive temporary
file in the same folder, fsync, rename, fsync of the folder), so a crash at any moment leaves
either the old file or the new one, never a partial one. On load the digest is checked before
anything is unpickled -- a truncated or edited file raises :class:`CheckpointError` naming the
file -- and the payload is read with ``torch.load(..., weights_only=True)``: only tensors,
numbers, strings and containers, never arbitrary objects. The digest is an integrity check, not
a signature: what makes a file from elsewhere safe to read is that nothing in it is executed or
imported (configurations travel as JSON and are rebuilt from fixed tables of built-in names).

A *training* checkpoint (what :class:`~scoresde.training.Trainer` writes) is a dict with
``format_version`` (:data:`FORMAT_VERSION`), ``step``, ``model``, ``ema``, the optimiser,
scheduler, data-order and RNG states, and ``config_json``, the run's configuration;
:func:`read_training_checkpoint` checks its version and reads that configuration.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import atomic_write_bytes
from ..errors import ArgumentError, CheckpointError

MAGIC = b"SCORESDE-CKPT v1\n"
_DIGEST_LEN = 64
_NAME = re.compile(r"^step_(\d{8,})\.ckpt$")

#: version of the training-state layout; 2 records the model, SDE and network as rebuildable specs
FORMAT_VERSION = 2


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, *, follow_dir_link: bool = True) -> Path:
    """Serialise ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    The folder of ``path`` must exist; ``follow_dir_link=False`` refuses a folder that is a
    symbolic link.
    """
    if not isinstance(state, dict):
        raise ArgumentError(f"state must be a dict, got {type(state).__name__}")
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode("ascii")
    return atomic_write_bytes(path, MAGIC + digest + b"\n" + payload, follow_dir_link=follow_dir_link)


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    raw = path.read_bytes()
    head = len(MAGIC) + _DIGEST_LEN + 1
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{str(path)!r} is not a scoresde checkpoint (bad header)")
    if len(raw) < head or raw[head - 1 : head] != b"\n":
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated ({len(raw)} bytes, header incomplete)")
    expected = raw[len(MAGIC) : head - 1].decode("ascii", errors="replace")
    payload = raw[head:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its payload ({len(payload)} bytes) does not match the "
            f"recorded SHA-256 (truncated or altered after writing)"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # a valid digest over an unreadable payload: written by something else
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read with weights_only=True: {first}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, expected a dict")
    return state


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """The file name used for the checkpoint after ``step`` optimiser steps."""
    return Path(directory) / f"step_{int(step):08d}.ckpt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint file in ``directory`` (not verified), or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def read_training_checkpoint(path: str | os.PathLike, map_location=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by the Trainer: ``(state, config)``, its format version checked.

    Raises :class:`CheckpointError` for a damaged file, a file that is not a training
    checkpoint, or one of another ``format_version`` (a newer one needs a newer scoresde).
    """
    state = load_checkpoint(path, map_location=map_location)
    return state, check_training_state(state, path)


def check_training_state(state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Check that ``state`` (read from ``path``) is a training state of :data:`FORMAT_VERSION`;
    returns its configuration."""
    name = str(Path(path))
    version = state.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {name!r} is not a training checkpoint of scoresde (no format_version)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {name!r} has format_version {version}, newer than this scoresde reads "
            f"({FORMAT_VERSION}); upgrade scoresde to load it"
        )
    if version < FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {name!r} has format_version {version}, written by an older scoresde whose "
            f"configuration cannot be rebuilt; this version reads format_version {FORMAT_VERSION} (train it again)"
        )
    missing = [k for k in ("step", "model", "ema", "config_json") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {name!r} lacks the entries {', '.join(missing)} of a training checkpoint")
    try:
        config = json.loads(state["config_json"])
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint {name!r} holds no readable configuration (config_json is not JSON)") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {name!r}: config_json must hold a mapping, got {type(config).__name__}")
    return config


def _shape(v) -> str:
    return str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__


def _names(keys: list[str], limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(module: nn.Module, weights: Any, source: str) -> None:
    """``module.load_state_dict(weights)``, or one line saying how they differ (CheckpointError).

    ``source`` names where the weights come from (a file), for the message.
    """
    if not isinstance(weights, dict):
        raise CheckpointError(f"{source}: the weights must be a state dict, got {type(weights).__name__}")
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {_shape(weights[k])} vs {_shape(own[k])}" for k in own
              if k in weights and (not isinstance(weights[k], torch.Tensor) or weights[k].shape != own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors ({_names(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} of other shapes (checkpoint vs model: {_names(shapes, 2)})")
    if problems:
        raise CheckpointError(f"{source} holds the weights of another architecture: " + "; ".join(problems))
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError) as err:  # e.g. a dtype that cannot be copied
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{source}: the weights do not load into the model: {first}") from None
