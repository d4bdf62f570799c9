"""scoresde/_files.py: atomic writes that never follow a planted link, stale temporaries, the folder lock."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from scoresde._files import (
    FolderLock,
    atomic_dir,
    atomic_write,
    atomic_write_bytes,
    remove_stale_temps,
    temp_name,
)
from scoresde.training import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics (links, flock, rlimits)")


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_failing_write_keeps_the_old_bytes_and_removes_its_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write(b"half of the new bytes")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


HALF_WRITE = textwrap.dedent(
    """
    import resource, signal, sys, torch
    from scoresde.training import save_checkpoint
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # the disk is full after 64 KB
    try:
        save_checkpoint({"w": torch.zeros(1_000_000)}, sys.argv[1])  # 4 MB
    except OSError as err:
        print("failed with errno", err.errno)
    """
)


@posix_only
def test_a_checkpoint_write_cut_off_half_way_keeps_the_old_checkpoint(tmp_path):
    """The disk fills up half-way through writing a checkpoint over an existing one: the old
    bytes stay (a write in place would have truncated them) and no temporary file is left."""
    path = tmp_path / "step_00000010.ckpt"
    save_checkpoint({"w": torch.ones(10)}, path)
    old = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", HALF_WRITE, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert "failed with errno 27" in proc.stdout, proc.stdout + proc.stderr  # EFBIG: it did fail half-way
    assert path.read_bytes() == old
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@posix_only
def test_links_are_replaced_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.bin").symlink_to(victim)  # the target itself is a link
    # the temporary name of the old scheme (.<stem>.tmp-<pid>) planted as a link too
    (out / f".result.tmp-{os.getpid()}.bin").symlink_to(victim)
    (out / f".result.bin.tmp-{os.getpid()}").symlink_to(victim)
    atomic_write_bytes(out / "result.bin", b"new")
    assert victim.read_text() == "precious"
    assert not (out / "result.bin").is_symlink() and (out / "result.bin").read_bytes() == b"new"


@posix_only
def test_a_folder_that_is_a_link_is_refused_when_asked(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "checkpoints").symlink_to(elsewhere)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "checkpoints" / "x.ckpt", b"x", follow_dir_link=False)
    with pytest.raises(OSError):
        save_checkpoint({"a": 1}, tmp_path / "checkpoints" / "y.ckpt", follow_dir_link=False)
    assert list(elsewhere.iterdir()) == []
    atomic_write_bytes(tmp_path / "checkpoints" / "z.bin", b"z")  # by default the user's folder may be a link
    assert (elsewhere / "z.bin").read_bytes() == b"z"


def test_temporary_names_are_unpredictable_and_carry_the_pid(tmp_path):
    a, b = temp_name("x.ckpt"), temp_name("x.ckpt")
    assert a != b and a.startswith(f".x.ckpt.tmp-{os.getpid()}-")


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    names = {
        "dead": f".out.npz.tmp-{dead}-abc123",
        "alive": f".out.npz.tmp-{alive}-def456",
        "other_target": f".other.npz.tmp-{dead}-0a0a0a",
        "owned": f".config.json.tmp-{alive}-ffff00",
    }
    for n in names.values():
        (tmp_path / n).write_bytes(b"x" * 100)
    (tmp_path / "out.npz").write_bytes(b"keep")
    assert remove_stale_temps(tmp_path, target="out.npz") == [names["dead"]]
    left = {p.name for p in tmp_path.iterdir()}
    assert names["alive"] in left and names["other_target"] in left and "out.npz" in left
    # a caller that owns a target (it holds the folder's lock) removes its temporaries whoever wrote them
    removed = remove_stale_temps(tmp_path, owned=lambda target: target == "config.json")
    assert sorted(removed) == sorted([names["owned"], names["other_target"]])


def test_atomic_dir_replaces_a_folder_as_a_whole(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    (tmp_path / f".report.tmp-{dead_pid()}-zzz").mkdir()  # left by a killed demo
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    with pytest.raises(ValueError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("x")
            raise ValueError("fails")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


@posix_only
def test_folder_lock_is_exclusive_and_refuses_a_link(tmp_path):
    a, b = FolderLock(tmp_path / ".lock"), FolderLock(tmp_path / ".lock")
    assert b.acquire(create=False) is False  # no lock file yet: nothing created
    assert not (tmp_path / ".lock").exists()
    assert a.acquire()
    with pytest.raises(BlockingIOError):
        b.acquire()
    a.release()
    assert b.acquire(create=False)
    b.release()
    (tmp_path / "victim").write_text("v")
    link = FolderLock(tmp_path / "link.lock")
    (tmp_path / "link.lock").symlink_to(tmp_path / "victim")
    with pytest.raises(OSError):
        link.acquire()
