r"""The one record of where a solve first went non-finite, kept on the device.

Samplers and ODE solves must not read a tensor's value on the host inside a step (that forces a
host-device synchronisation on a GPU). :class:`NonFiniteTracker` therefore keeps, as device
tensors, whether any watched value has been NaN or infinite and the time at which that was first
seen; the caller reads it on the host only when it chooses to (every ``check_every`` steps, or once
after a solve). Both the sampling driver and the probability-flow system use it.
"""

from __future__ import annotations

import torch
from torch import Tensor


class NonFiniteTracker:
    """Whether, and at which time first, a watched tensor stopped being finite (device-side)."""

    def __init__(self) -> None:
        self._seen: Tensor | None = None  # bool, 0-d
        self._time: Tensor | None = None  # the time at which it was first seen

    def watch(self, t: Tensor, *values: Tensor) -> None:
        """Record the values reached at time ``t`` (a 0-d or ``(batch,)`` tensor of equal entries);
        no host read."""
        t = t.detach().reshape(-1)[:1].reshape(())
        bad = torch.stack([~torch.isfinite(v.detach()).all() for v in values]).any()
        if self._seen is None:
            self._seen, self._time = bad, torch.where(bad, t, torch.zeros_like(t))
            return
        fresh = bad & ~self._seen
        self._time = torch.where(fresh, t.to(self._time.dtype), self._time)
        self._seen = self._seen | bad

    def first_time(self) -> float | None:
        """The time at which a watched value first was NaN or infinite, or None (one host read)."""
        if self._seen is None or not bool(self._seen):
            return None
        return float(self._time)
