"""A training run's logs: CSV files in the run folder, mirrored to TensorBoard when installed.

Each log (``metrics.csv``, ``eval.csv``) is a CSV with a ``step`` column, appended one row at a
time so that a killed run keeps what it wrote (opened without following a symbolic link). On
resume, rows after the checkpoint's step are dropped, because the resumed run writes them again
(the file is rewritten atomically). Only the process that owns the run folder writes (rank 0
under ``torchrun``); for the others every method is a no-op.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from .._files import append_nofollow, atomic_write_bytes
from ..errors import ArgumentError

LOG_FILES = ("metrics.csv", "eval.csv")


class RunLog:
    """Appends rows to ``out_dir/<name>.csv`` and, when enabled, to TensorBoard under ``<name>/<key>``.

    Args:
        out_dir: the run folder, or None for no logs.
        writer: False for a process that must not write (a non-zero rank).
        tensorboard: True (required), False (off) or None (on when the package is installed).
    """

    def __init__(self, out_dir: Path | None, *, writer: bool = True, tensorboard: bool | None = None):
        self.out_dir = out_dir if writer else None
        self.tensorboard = tensorboard
        self._tb = None

    def open(self) -> None:
        """Start TensorBoard events (once); a missing package is an error only if it was required."""
        if self.out_dir is None or self.tensorboard is False or self._tb is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if self.tensorboard:
                raise ArgumentError("tensorboard=True but the tensorboard package is not installed") from None
            return
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def write(self, name: str, row: dict[str, float]) -> None:
        """Append ``row`` (which has a ``step``) to the CSV ``name``, writing the header first if new."""
        if self.out_dir is None:
            return
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=list(row))
        with append_nofollow(self.out_dir / name) as f:
            if os.fstat(f.fileno()).st_size == 0:
                w.writeheader()
            w.writerow(row)
            f.write(text.getvalue().encode())
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(f"{name[:-4]}/{k}", v, row["step"])

    def truncate_after(self, step: int) -> None:
        """Drop rows written after ``step`` (a resumed run produces them again)."""
        if self.out_dir is None:
            return
        for name in LOG_FILES:
            path = self.out_dir / name
            if not path.exists():
                continue
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
            if len(kept) == len(rows):
                continue
            text = io.StringIO()
            csv.writer(text).writerows(kept)
            atomic_write_bytes(path, text.getvalue().encode())

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
