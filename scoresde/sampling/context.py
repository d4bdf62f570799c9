r"""What a sampler's steps see besides the state: the :class:`Context` of one run, and the
:class:`Trajectory` it records.

The context holds the SDE, the counting score (:meth:`Context.score`), the injected noise, the
grid and the quantities on it that the steps share (marginals, log-SNR, computed once), and it
does what the driver does after each step (:meth:`Context.accept`: projection, the device-side
non-finite flag, recording, progress).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from ..errors import ArgumentError, NonFiniteError, ScoreSDEError
from ..flow import NonFiniteTracker
from ..sde import SDE, ScoreFn, call_score
from .noise import NoiseSource


@dataclass
class Trajectory:
    """States visited by a sampler: ``times`` of shape ``(n,)`` and ``states`` of shape ``(n, *shape)``."""

    times: Tensor
    states: Tensor


class Context:
    """What a sampler's steps see besides the state (built by :func:`scoresde.sample`).

    Attributes:
        sde: the forward SDE.
        times: the grid, a decreasing tensor of the samples' dtype and device, shape ``(N + 1,)``.
        times_host: the same grid as Python floats (float64), for solvers that take floats.
        n_steps: ``N``.
        nfe: score evaluations made so far.
        wanted: the grid indices whose states the result needs (all when recording a trajectory,
            else the first and the last); whole-solve samplers return the states there.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, noise: NoiseSource, times: Tensor, *, sampler_name: str,
                 times_host: list[float] | None = None, record: bool = False, progress=None,
                 project: Callable[[Tensor, Tensor], Tensor] | None = None, check_every: int = 100):
        self.sde = sde
        self.times = times
        self.times_host = times.tolist() if times_host is None else list(times_host)
        self.n_steps = len(times) - 1
        self._score_fn = score_fn
        self._noise = noise
        self.sampler_name = sampler_name
        self.nfe = 0
        self.record = record
        self.wanted = list(range(len(times))) if record else [0, self.n_steps]
        self._progress = progress
        self._project = project
        self._check_every = int(check_every)
        self._tracker = NonFiniteTracker()
        self._traj_t: list[Tensor] = []
        self._traj_x: list[Tensor] = []

    # ---- for the steps -------------------------------------------------------------------------
    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """``score_fn(x, t)`` with ``t`` broadcast to ``(batch,)``, counted and its output checked
        (:func:`~scoresde.sde.call_score`).

        An exception from the first call (usually a signature, shape or device mismatch) is
        re-raised as an :class:`ArgumentError` that says it came from ``score_fn`` and with which
        inputs; later calls, and out-of-memory errors, propagate unchanged.
        """
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        self.nfe += 1
        if self.nfe > 1:
            return call_score(self._score_fn, x, t)
        try:
            return call_score(self._score_fn, x, t)
        except (ScoreSDEError, MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as err:
            raise ArgumentError(
                f"score_fn raised {type(err).__name__} on its first call score_fn(x, t), with x of shape "
                f"{tuple(x.shape)} ({x.dtype}, {x.device}) and t of shape {tuple(t.shape)}: {err}"
            ) from err

    def predict(self, x: Tensor, i: int, kind: str = "x0") -> Tensor:
        r"""One counted score evaluation at grid time ``times[i]`` as a data prediction
        :math:`\hat x_0 = (x + \sigma^2 s)/\alpha` (``kind="x0"``) or a noise prediction
        :math:`\hat\epsilon = -\sigma s` (``kind="eps"``), with the grid's marginals (linear SDEs)."""
        t = self.times[i]
        alphas, sigmas = self.marginals
        convert = self.sde.to_x0 if kind == "x0" else self.sde.to_eps
        return convert(self.score(x, t), x, t, "score", marginal=(alphas[i], sigmas[i]))

    @property
    def score_fn(self) -> ScoreFn:
        """The counting score as a plain ``score_fn`` (for :meth:`SDE.reverse`, torchdiffeq, torchsde)."""
        return self.score

    def noise(self, like: Tensor) -> Tensor:
        """Standard normal noise of ``like``'s shape, dtype and device (per sample when seeded so)."""
        return self._noise(like)

    @property
    def per_sample_seeds(self) -> bool:
        """Whether each sample has its own generator (then it must not depend on its batch-mates)."""
        return self._noise.per_sample

    @property
    def generator(self) -> torch.Generator | None:
        """The one generator of the batch (None with per-sample seeds or none given)."""
        return None if self._noise.per_sample else self._noise.generator

    @cached_property
    def marginals(self) -> tuple[Tensor, Tensor]:
        r""":math:`(\alpha_{t_i}, \sigma_{t_i})` on the grid (linear SDEs), computed once."""
        return self.sde.marginal(self.times)

    @cached_property
    def host_marginals(self) -> tuple[list[float], list[float], list[float]]:
        r""":math:`(\alpha_{t_i}, \sigma_{t_i}, \lambda_{t_i})` on the grid as Python floats, computed once in
        float64 on the host from :attr:`times_host` (linear SDEs): the steps' coefficients are built from
        them before the loop, so a step reads no tensor."""
        t = torch.tensor(self.times_host, dtype=torch.float64)
        a, s = self.sde.marginal(t)
        return a.tolist(), s.tolist(), self.sde.log_snr(t).tolist()

    @cached_property
    def log_snr(self) -> Tensor:
        r""":math:`\lambda_{t_i} = \log(\alpha_{t_i}/\sigma_{t_i})` on the grid (linear SDEs), computed once."""
        alphas, sigmas = self.marginals
        return alphas.log() - sigmas.log()

    # ---- for the driver ------------------------------------------------------------------------
    def accept(self, x: Tensor, i: int, *, project: bool = True) -> Tensor:
        """Take the state reached at ``times[i]``: constrain, flag non-finite values, record, and
        every ``check_every`` steps read the flag."""
        t = self.times[i]
        if project and self._project is not None:
            x = self._project(x, t)
        self._tracker.watch(t, x)
        if self.record:
            self._traj_t.append(t.detach().reshape(()).clone())
            self._traj_x.append(x.detach().clone())
        if i > 0:
            if self._progress is not None:
                self._progress.update(1)
            if self._check_every > 0 and i % self._check_every == 0:
                self.check_finite()  # one host read every `check_every` steps
        return x

    def advance(self, steps: int) -> None:
        """Move the progress bar on by ``steps`` taken without a state to accept."""
        if self._progress is not None and steps > 0:
            self._progress.update(steps)

    def watch(self, x: Tensor, t: Tensor) -> None:
        """Flag ``x`` (reached at ``t``) if it is not finite (e.g. after the denoising step)."""
        self._tracker.watch(t, x)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if the state has been non-finite at some point."""
        t_bad = self._tracker.first_time()
        if t_bad is not None:
            t0, t1 = self.times_host[0], self.times_host[-1]
            raise NonFiniteError(
                f"sampler {self.sampler_name!r} produced non-finite values (NaN or inf): first seen at "
                f"t={t_bad:.6g}, integrating from t={t0:.6g} down to eps={t1:.6g}. "
                "Check that score_fn returns finite values there, or use more steps."
            )

    def trajectory(self) -> Trajectory | None:
        if not self.record or not self._traj_t:
            return None
        return Trajectory(torch.stack(self._traj_t), torch.stack(self._traj_x))
