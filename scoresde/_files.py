r"""Safe writes into folders that others may share: atomic replacement, no links followed, a lock.

Every file scoresde writes -- checkpoints, ``config.json``, logs rewritten on resume, the
command line's outputs -- goes through :func:`atomic_write`:

1. a fresh temporary file is created *exclusively* in the target's own folder
   (``O_CREAT | O_EXCL | O_NOFOLLOW``, with an unpredictable name), so nothing planted under
   that name -- a file, a symbolic link -- can be opened or written through;
2. the bytes are written, flushed and ``fsync``-ed;
3. the file is renamed over the target (``os.replace`` is atomic, and replaces a symbolic link
   itself, never what it points to), and the folder is ``fsync``-ed.

A crash at any moment leaves either the old file or the new one, never a partial one. Temporary
names are ``.<target>.tmp-<pid>-<random>``: a temporary file left behind by a writer that was
killed can be recognised and removed (:func:`remove_stale_temps`).

:class:`FolderLock` is an advisory ``flock`` on a lock file. The kernel drops it when its
process exits, however it exits, so a run killed with SIGKILL can be resumed at once. (Without
``fcntl``, on Windows, no lock is taken.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FD = os.open in os.supports_dir_fd and os.replace in os.supports_dir_fd
#: ``.<target>.tmp-<pid>-<random>``: the names of every temporary file and folder written here
_TEMP = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def temp_name(target: str) -> str:
    """A fresh temporary name for a file that will be renamed to ``target``."""
    return f".{target}.tmp-{os.getpid()}-{secrets.token_hex(6)}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def _open_dir(directory: Path, follow: bool) -> int | None:
    """A descriptor of ``directory`` for ``*at`` calls (None where the platform has none).

    ``follow=False``: fail (ELOOP / ENOTDIR) when its last component is a symbolic link.
    """
    if not _DIR_FD:
        if not follow and directory.is_symlink():
            raise OSError(errno.ELOOP, "refusing to write through a symbolic link", str(directory))
        return None
    return os.open(directory, os.O_RDONLY | _DIRECTORY | _CLOEXEC | (0 if follow else _NOFOLLOW))


def _fsync_dir(fd: int | None, directory: Path) -> None:
    try:
        own = fd is None
        if own:
            fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: a directory cannot be opened; the rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        if own:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, follow_dir_link: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block ends without error.

    On an error the temporary file is removed and ``path`` keeps its old bytes. The folder of
    ``path`` must exist. ``follow_dir_link=False``: refuse when that folder is itself a symbolic
    link (a run folder's ``checkpoints/``).
    """
    path = Path(path)
    parent = path.parent
    dir_fd = _open_dir(parent, follow_dir_link)
    name = temp_name(path.name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
    replaced = False
    try:
        fd = os.open(name, flags, 0o666, dir_fd=dir_fd) if dir_fd is not None else os.open(parent / name, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            if dir_fd is not None:
                os.replace(name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.replace(parent / name, path)
            replaced = True
        finally:
            if not replaced:
                with contextlib.suppress(FileNotFoundError):
                    if dir_fd is not None:
                        os.unlink(name, dir_fd=dir_fd)
                    else:
                        os.unlink(parent / name)
        _fsync_dir(dir_fd, parent)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, follow_dir_link: bool = True) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_write`; returns ``path``."""
    with atomic_write(path, follow_dir_link=follow_dir_link) as f:
        f.write(data)
    return Path(path)


def append_nofollow(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for appending (created if absent), refusing a symbolic link (ELOOP)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _BINARY
    return os.fdopen(os.open(path, flags, 0o666), "ab")


def remove_stale_temps(directory: str | os.PathLike, *, target: str | None = None,
                       owned: Callable[[str], bool] = lambda target: False) -> list[str]:
    """Remove the temporary files (and folders) in ``directory`` that no live writer owns.

    A temporary entry (named by :func:`temp_name`) is removed when the process that created it
    is gone, or when ``owned(its target)`` says the caller owns that target (it holds the lock
    of the folder). ``target``: only temporaries of that target name. Returns the names removed.
    """
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or (target is not None and m["target"] != target):
            continue
        if not owned(m["target"]) and pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)  # a link is removed, never its target
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; on success it replaces ``path`` as a whole.

    On an error the temporary folder is removed and ``path`` is left as it was. Temporary
    folders of ``path`` left by writers that died are removed first.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    remove_stale_temps(parent, target=path.name)
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the result is an ordinary folder
    try:
        yield tmp
        if path.exists():  # swap: old aside, new in, old removed
            aside = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            os.replace(path, aside / "old")
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class FolderLock:
    """An exclusive advisory lock held through ``flock`` on the file ``path``.

    The lock file is opened without following a symbolic link; it is never removed (removing
    it would let a second process lock a new file while the first still holds the old one).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, create: bool = True) -> bool:
        """Take the lock without waiting.

        Returns False when ``create`` is False and there is no lock file yet; raises
        ``BlockingIOError`` when another process (or another open of the file) holds it.
        """
        if self._fd is not None:
            return True
        flags = os.O_RDWR | _NOFOLLOW | _CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except FileNotFoundError:
            if create:
                raise
            return False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise BlockingIOError(errno.EWOULDBLOCK, "locked by another process", str(self.path)) from None
                # a file system without locks (some network mounts): work on, but say so
                warnings.warn(f"cannot lock {str(self.path)!r} ({err.strerror}); nothing stops another process "
                              f"from writing to this folder at the same time", stacklevel=3)
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.release()
