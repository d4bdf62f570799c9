r"""The one record of where a solve first went non-finite, kept on the device.

Samplers and ODE solves must not read a tensor's value on the host inside a step (that forces a
host-device synchronisation on a GPU). :class:`NonFiniteTracker` therefore keeps, as device
tensors, each watched state's sum (NaN or infinite exactly when some entry is) and the time it
was reached; the caller reads the record on the host only when it chooses to (every
``check_every`` steps, or once after a solve). Both the sampling driver and the probability-flow
system use it.

Per watched state this costs one reduction; the record is folded into a "first time seen" pair
every :attr:`NonFiniteTracker.FOLD_EVERY` states, so its memory stays bounded.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _total(v: Tensor) -> Tensor:
    """The sum of ``v`` in float64: NaN or infinite exactly when some entry is (one reduction, no
    boolean tensor of ``v``'s size). In float64 finite float32 entries cannot overflow the sum, and
    float64 entries only beyond about 1e300 (a state that large has diverged anyway)."""
    v = v.detach()
    if not v.is_floating_point():
        return v.sum().double()
    return v.sum(dtype=torch.float64 if v.device.type != "mps" else v.dtype)  # MPS has no float64


class NonFiniteTracker:
    """Whether, and at which time first, a watched tensor stopped being finite (device-side)."""

    #: watched states kept as (time, sum) before they are folded into the first-time record
    FOLD_EVERY = 256

    def __init__(self) -> None:
        self._pending: list[tuple[Tensor, Tensor]] = []  # (time, sum) of the states not yet folded
        self._seen: Tensor | None = None  # bool, 0-d
        self._time: Tensor | None = None  # the time at which it was first seen

    def watch(self, t: Tensor, *values: Tensor) -> None:
        """Record the values reached at time ``t`` (a 0-d or ``(batch,)`` tensor of equal entries);
        no host read."""
        t = t.detach().reshape(-1)[:1].reshape(())
        total = _total(values[0])
        for v in values[1:]:
            total = total + _total(v)
        self._pending.append((t, total))
        if len(self._pending) >= self.FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Fold the pending record into (seen, first time): a few kernels for many states."""
        if not self._pending:
            return
        times = torch.stack([t.to(self._pending[0][1].dtype) for t, _ in self._pending])
        bad = ~torch.isfinite(torch.stack([s for _, s in self._pending]))
        self._pending = []
        any_bad = bad.any()
        first = times[bad.to(torch.uint8).argmax()]  # argmax gives the first maximal entry
        if self._seen is None:
            self._seen, self._time = any_bad, torch.where(any_bad, first, torch.zeros_like(first))
            return
        fresh = any_bad & ~self._seen
        self._time = torch.where(fresh, first.to(self._time.dtype), self._time)
        self._seen = self._seen | any_bad

    def first_time(self) -> float | None:
        """The time at which a watched value first was NaN or infinite, or None (one host read)."""
        self._fold()
        if self._seen is None or not bool(self._seen):
            return None
        return float(self._time)
