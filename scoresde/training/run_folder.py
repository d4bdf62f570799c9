r"""A training run's folder: what belongs in it, who may write to it, what a resumed run may change.

Layout of ``out_dir``::

    config.json                 the run's configuration (what load_run and a resumed run read)
    metrics.csv, eval.csv       the logs (see :mod:`scoresde.training.run_log`)
    checkpoints/step_<8-digit step>.ckpt
    tensorboard/                events, when the package is installed
    .lock                       locked (flock) by the process that trains in the folder

The rules a :class:`~scoresde.training.Trainer` follows, in this order:

1. **Check before writing.** The folder is inspected (read only) first; a refusal leaves every
   byte in it as it was.
2. **No links.** None of the entries above may be a symbolic link (nor another kind of file
   than the one it should be): a planted link would redirect a write out of the folder. The run
   folder's own path may go through links -- that is the user's choice.
3. **One writer.** The process that trains holds the lock on ``.lock``; a second one is refused
   at once. The kernel drops the lock when its process dies, so a killed run resumes at once.
4. **A fresh run needs a folder without a run** (no ``config.json``, logs or checkpoints);
   to continue one, resume it.
5. **A resumed run is the same run.** Its configuration must equal the recorded one except the
   fields that change no update (:func:`~scoresde.training.config.may_change_on_resume`) and
   the number of processes; :func:`config_differences` lists what differs.

Once the lock is held, temporary files that earlier writers of the run's own files left behind
(a process killed while writing a checkpoint) are removed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._files import FolderLock, atomic_write_bytes, remove_stale_temps
from ..errors import RunFolderError
from .checkpoint import _NAME as _CHECKPOINT_NAME
from .checkpoint import list_checkpoints
from .config import may_change_on_resume
from .run_log import LOG_FILES

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
#: files of the run itself, directly in the folder
RUN_FILES = (CONFIG, *LOG_FILES)
#: top-level config keys that may differ on resume (the number of processes; the layout version)
RESUMABLE_KEYS = ("world_size", "format_version")

T = TypeVar("T")


class RunFolder:
    """The folder ``path`` of one training run (see the module docstring for its rules)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoint_dir = self.path / CHECKPOINTS
        self._lock = FolderLock(self.path / LOCK)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def locked(self) -> bool:
        """Whether this process holds the folder's lock."""
        return self._lock.held

    # ---- read-only inspection ----------------------------------------------------------------
    def check_entries(self) -> None:
        """Refuse a folder that is a file, and run entries that are links or of the wrong kind."""
        try:
            st = os.stat(self.path)  # the folder's own path may go through a link
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise RunFolderError(f"run folder {str(self.path)!r} cannot be created: part of its path is a file") from None
        if not stat.S_ISDIR(st.st_mode):
            raise RunFolderError(f"run folder {str(self.path)!r} is a file, not a folder; choose another folder")
        for name in (*RUN_FILES, LOCK):
            self._check_entry(self.path / name, stat.S_ISREG, "a regular file")
        for name in (CHECKPOINTS, TENSORBOARD):
            self._check_entry(self.path / name, stat.S_ISDIR, "a folder")
        if self.checkpoint_dir.is_dir():
            for entry in os.scandir(self.checkpoint_dir):
                if _CHECKPOINT_NAME.match(entry.name):
                    self._check_entry(Path(entry.path), stat.S_ISREG, "a regular file")

    def _check_entry(self, path: Path, is_kind: Callable[[int], bool], kind: str) -> None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise RunFolderError(
                f"{str(path)!r} in run folder {str(self.path)!r} is a symbolic link; scoresde never writes "
                f"through links in a run folder: remove it or choose another folder"
            )
        if not is_kind(mode):
            raise RunFolderError(f"{str(path)!r} in run folder {str(self.path)!r} must be {kind}")

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of the checkpoint files, oldest first."""
        return list_checkpoints(self.checkpoint_dir)

    def contents(self) -> list[str]:
        """What of a run the folder holds, in words (empty: no run)."""
        found = [name for name in RUN_FILES if (self.path / name).exists()]
        ckpts = self.checkpoints()
        if ckpts:
            found.append(f"{len(ckpts)} checkpoint(s) up to step {ckpts[-1][0]}")
        return found

    def check_free(self) -> None:
        """Refuse a folder that already holds a run (a new run must not mix with it)."""
        contents = self.contents()
        if contents:
            raise RunFolderError(
                f"run folder {str(self.path)!r} already holds a run ({', '.join(contents)}); continue it with "
                f"Trainer.resume() (scoresde train --resume) or choose another folder"
            )

    def read_config(self) -> dict[str, Any] | None:
        """The recorded ``config.json`` (None when there is none)."""
        path = self.path / CONFIG
        if not path.exists():
            return None
        try:
            config = json.loads(path.read_bytes())
        except ValueError:
            raise RunFolderError(f"{str(path)!r} is not valid JSON; the run folder is damaged") from None
        if not isinstance(config, dict):
            raise RunFolderError(f"{str(path)!r} must hold a JSON mapping; the run folder is damaged")
        return config

    # ---- the lock ----------------------------------------------------------------------------
    def claim(self, check: Callable[[], T]) -> T:
        """Take the folder's lock and return ``check()``; nothing is written when either fails.

        ``check`` inspects the folder (read only) and raises to refuse it. When the folder has
        no lock file yet, ``check`` runs first, then the lock file is created and ``check`` runs
        again under the lock (another process may have started in between).
        """
        self.check_entries()
        try:
            locked = self._lock.acquire(create=False)
        except BlockingIOError:
            raise self._busy() from None
        except OSError as err:
            raise self._unwritable(err) from None
        try:
            result = check()
            if not locked:
                try:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._lock.acquire(create=True)
                except BlockingIOError:
                    raise self._busy() from None
                except OSError as err:
                    raise self._unwritable(err) from None
                self.check_entries()
                result = check()
        except BaseException:
            self._lock.release()
            raise
        return result

    def release(self) -> None:
        """Drop the lock (also dropped by the OS when the process ends)."""
        self._lock.release()

    def _busy(self) -> RunFolderError:
        return RunFolderError(
            f"run folder {str(self.path)!r} is in use: another process is training in it (it holds "
            f"{str(self.path / LOCK)!r}); wait for it to finish or choose another folder"
        )

    def _unwritable(self, err: OSError) -> RunFolderError:
        return RunFolderError(f"cannot write to run folder {str(self.path)!r}: {err.strerror or err}")

    # ---- writing (lock held) -----------------------------------------------------------------
    def prepare(self) -> None:
        """Create ``checkpoints/`` and remove temporary files left by killed writers of the run's files."""
        assert self.locked, "prepare() needs the lock"
        try:
            self.checkpoint_dir.mkdir(exist_ok=True)
        except OSError as err:
            raise self._unwritable(err) from None
        self.check_entries()  # nothing planted since the check
        remove_stale_temps(self.path, owned=lambda target: target in RUN_FILES)
        remove_stale_temps(self.checkpoint_dir, owned=lambda target: bool(_CHECKPOINT_NAME.match(target)))

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        atomic_write_bytes(self.path / CONFIG, json.dumps(config, indent=2).encode())


# ---- what a resumed run may change -----------------------------------------------------------
_ABSENT = object()


def _show(value) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every (dotted) key in which ``new`` differs from ``old`` where a
    resumed run must not differ (everything but the resumable ``train`` fields and the
    :data:`RESUMABLE_KEYS`)."""
    new = json.loads(json.dumps(new))  # the form a recorded config has (tuples become lists)
    diffs: list[str] = []

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key in [*a, *(k for k in b if k not in a)]:
            name = f"{prefix}{key}"
            va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
            if (not prefix and key in RESUMABLE_KEYS) or va == vb:
                continue
            if isinstance(va, dict) and isinstance(vb, dict):
                walk(va, vb, name + ".")
            elif not (prefix == "train." and may_change_on_resume(key, a, b)):
                diffs.append(f"{name}: {_show(va)} -> {_show(vb)}")

    walk(old, new, "")
    return diffs


def summarise(diffs: list[str], limit: int = 4) -> str:
    """The differences as one line."""
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more
