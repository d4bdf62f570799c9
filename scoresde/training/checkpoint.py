r"""Atomic, verified checkpoint files.

A checkpoint file is a short header followed by a ``torch.save`` payload::

    SCORESDE-CKPT v1\n
    <sha256 of the payload, 64 hex digits>\n
    <payload>

It is written to a temporary file in the same directory, flushed and ``fsync``-ed, then renamed
over the final name (``os.replace`` is atomic on POSIX and Windows), and the directory is
``fsync``-ed, so a crash at any moment leaves either the old file or the new one, never a
partial one. On load the digest is checked before anything is unpickled -- a truncated or
edited file raises :class:`CheckpointError` naming the file -- and the payload is read with
``torch.load(..., weights_only=True)``: only tensors, numbers, strings and containers, never
arbitrary objects (configurations travel as JSON strings).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ArgumentError, CheckpointError

MAGIC = b"SCORESDE-CKPT v1\n"
_DIGEST_LEN = 64
_NAME = re.compile(r"^step_(\d{8,})\.ckpt$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file, flush, fsync, rename, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Serialise ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    if not isinstance(state, dict):
        raise ArgumentError(f"state must be a dict, got {type(state).__name__}")
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode("ascii")
    return atomic_write_bytes(path, MAGIC + digest + b"\n" + payload)


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
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
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read with weights_only=True: {err}") from err
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
