r"""Hand a forward SDE, or a reverse-time one, to :func:`torchsde.sdeint`.

torchsde integrates :math:`dy = F(s, y)\,ds + G(s, y)\,dW_s` forward in ``s`` on flat states
``(batch, d)``. A reverse-time process indexed by forward time :math:`t` runs in
:math:`s = t_0 - t`, where its drift changes sign: :math:`dy = -\mu(y, t_0 - s)\,ds + g\,dW_s`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

from ..errors import ArgumentError, check_batch, check_choice, check_positive, check_seed
from .base import SDE, ReverseSDE

#: torchsde's methods for Itô SDEs with diagonal noise (the adapter's noise and SDE type)
ITO_METHODS = ("euler", "milstein", "srk")


class TorchsdeAdapter(torch.nn.Module):
    """A ``torchsde``-compatible wrapper (Itô, diagonal noise) around an SDE or ReverseSDE.

    Args:
        process: an :class:`SDE` or a :class:`ReverseSDE`.
        event_shape: the shape of one sample (states are flattened to ``(batch, d)``).
        reverse_from: ``None`` for forward time; else the forward time :math:`t_0` at which
            the reverse-time solve starts, with :math:`t = t_0 - s`.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, process: SDE | ReverseSDE, event_shape: Sequence[int], reverse_from=None):
        super().__init__()
        self.process = process
        self.event_shape = tuple(event_shape)
        self.reverse_from = reverse_from
        # torchsde.sdeint calls f once before solving, only to read the drift's shape
        # (check_contract); that call is answered with a tensor of the known shape, so a solve
        # evaluates the score exactly as often as its steps need
        self.shape_check_pending = True

    def _unflatten(self, s: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y.reshape((y.shape[0],) + self.event_shape)
        t = s if self.reverse_from is None else self.reverse_from - s
        return x, t.to(y.dtype).expand(y.shape[0])

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        if self.shape_check_pending:
            self.shape_check_pending = False
            return torch.zeros_like(y)  # the drift's shape, (batch, d), for torchsde's check
        x, t = self._unflatten(s, y)
        mu = self.process.drift(x, t).reshape(y.shape)
        return mu if self.reverse_from is None else -mu

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        x, t = self._unflatten(s, y)
        return torch.broadcast_to(self.process.diffusion(x, t), x.shape).reshape(y.shape)


def torchsde_integrate(
    process: SDE | ReverseSDE,
    x: Tensor,
    times: Sequence[float] | Tensor,
    *,
    method: str = "euler",
    dt: float = 1e-3,
    bm: torchsde.BrownianInterval | None = None,
    seed: int | None = None,
    **sdeint_kwargs,
) -> Tensor:
    """Integrate ``process`` from ``x`` at ``times[0]`` through ``times`` with torchsde.

    ``times`` increase for a forward :class:`SDE` and decrease (from T towards eps) for a
    :class:`ReverseSDE`. ``method`` is one of torchsde's Itô methods ``"euler"``,
    ``"milstein"``, ``"srk"``; ``dt`` its fixed step. Returns the states at ``times``, shape
    ``(len(times), *x.shape)``. Pass ``bm`` or ``seed`` for reproducible Brownian paths.
    """
    if not isinstance(process, (SDE, ReverseSDE)):
        raise ArgumentError(f"process must be a scoresde SDE or ReverseSDE, got {type(process).__name__}")
    check_batch("x", x)
    check_choice("method", method, ITO_METHODS)
    dt = check_positive("dt", dt)
    if seed is not None:
        seed = check_seed("seed", seed)
    if bm is not None and not isinstance(bm, torchsde.BrownianInterval):
        raise ArgumentError(f"bm must be a torchsde.BrownianInterval, got {type(bm).__name__}")
    try:
        # float64 times (where the device has them): torchsde accumulates its fixed steps in the
        # times' dtype, and float32 round-off added a tiny extra step (and evaluation) to solves
        tdtype = torch.float64 if x.device.type != "mps" else x.dtype
        times = torch.as_tensor(times, dtype=tdtype, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"times must be a 1-D sequence of numbers, got {times!r}") from None
    if times.dim() != 1 or times.numel() < 2:
        raise ArgumentError(f"times must be a 1-D sequence of at least 2 times, got shape {tuple(times.shape)}")
    if not bool(((times >= 0) & (times <= process.T)).all()):  # once, before the solve
        raise ArgumentError(f"times must lie in [0, T] = [0, {process.T:g}], got {times.tolist()}")
    steps = times[1:] - times[:-1]
    reverse = isinstance(process, ReverseSDE)
    if reverse and not bool((steps < 0).all()):
        raise ArgumentError("times must decrease (from T towards eps) for a reverse-time process")
    if not reverse and not bool((steps > 0).all()):
        raise ArgumentError("times must increase for a forward SDE")
    t0 = times[0]
    ts = (t0 - times) if reverse else times
    adapter = TorchsdeAdapter(process, x.shape[1:], reverse_from=t0 if reverse else None)
    y0 = x.reshape(x.shape[0], -1)
    if bm is None:
        bm = torchsde.BrownianInterval(
            t0=ts[0], t1=ts[-1], size=y0.shape, dtype=x.dtype, device=x.device,
            entropy=seed, levy_area_approximation="space-time" if method == "srk" else "none",
        )
    ys = torchsde.sdeint(adapter, y0, ts, method=method, dt=dt, bm=bm, **sdeint_kwargs)
    return ys.reshape((len(times),) + tuple(x.shape))
