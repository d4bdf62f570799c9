r"""The interface every sampler shares, the registry of sampler names, and the solve context.

A sampler integrates a reverse-time process from :math:`t_{start}` (default :math:`T`) down to
:math:`\varepsilon` on a decreasing time grid :math:`t_0 > t_1 > \dots > t_N`, seeing only the SDE
and a ``score_fn``. It receives a :class:`SolveContext` that

* evaluates the score (and counts evaluations: ``nfe``),
* draws Gaussian noise from the caller's generator (or one generator per sample),
* takes each new state through :meth:`SolveContext.step_done`, which applies constraints
  (inpainting), records the trajectory, advances the progress bar and keeps a device-side flag
  of the first time at which the state stopped being finite. The flag is read on the host only
  every ``check_every`` steps and at the end, so a step never forces a host-device sync.
"""

from __future__ import annotations

import abc
import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ArgumentError, NonFiniteError, ScoreSDEError
from ..sde import SDE, LinearSDEBase, call_score

ScoreFn = Callable[[Tensor, Tensor], Tensor]

_REGISTRY: dict[str, type[Sampler]] = {}


@dataclass
class Trajectory:
    """States visited by a sampler: ``times`` of shape ``(n,)`` and ``states`` of shape ``(n, *shape)``."""

    times: Tensor
    states: Tensor


@dataclass
class SampleResult:
    """What :func:`scoresde.sample` returns.

    Attributes:
        x: the samples, of the requested shape.
        nfe: number of score evaluations made (one per call of ``score_fn`` on the batch).
        times: the time grid used (``None`` for adaptive ODE solves, whose steps are chosen on the way).
        trajectory: the states along the way when ``return_trajectory=True``, else ``None``.
        sampler: the sampler that produced them.
    """

    x: Tensor
    nfe: int
    times: Tensor | None = None
    trajectory: Trajectory | None = None
    sampler: Sampler | None = None


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make ``cls`` reachable as ``sample(..., sampler=cls.name)``."""
    if not getattr(cls, "name", None):
        raise ArgumentError(f"sampler class {cls.__name__} must set a non-empty `name`")
    _REGISTRY[cls.name] = cls
    return cls


def available_samplers() -> list[str]:
    """The names accepted by ``sample(..., sampler=...)``."""
    return sorted(_REGISTRY)


def get_sampler(name: str | Sampler | type[Sampler], **options) -> Sampler:
    """A sampler instance from a registered name, a class, or an instance (options must then be empty).

    An option the sampler does not take is refused by name, with the valid ones listed.
    """
    return make_sampler(name, options)


def make_sampler(name: str | Sampler | type[Sampler], options: dict, *, also: Sequence[str] = ()) -> Sampler:
    """:func:`get_sampler` with the caller's own keyword names ``also`` offered as suggestions
    (a misspelt :func:`~scoresde.sample` argument lands among the sampler's options)."""
    if isinstance(name, Sampler):
        if options:
            raise ArgumentError(
                f"options {sorted(options)} cannot be applied to an existing sampler instance; "
                "pass them to its constructor"
            )
        return name
    if isinstance(name, type) and issubclass(name, Sampler):
        cls = name
    elif isinstance(name, str) and name in _REGISTRY:
        cls = _REGISTRY[name]
    else:
        raise ArgumentError(f"unknown sampler {name!r}; valid names are: {', '.join(available_samplers())}")
    check_options(cls, options, also=also)
    return cls(**options)


def sampler_options(cls: type[Sampler]) -> list[str] | None:
    """The keyword options of a sampler class (None when its constructor takes ``**kwargs``)."""
    params = list(inspect.signature(cls).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_options(cls: type[Sampler], options: dict, *, also: Sequence[str] = ()) -> None:
    """Refuse options that ``cls`` does not take, naming them, a close match (among the valid
    ones and ``also``) and the valid ones."""
    valid = sampler_options(cls)
    if valid is None:
        return
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    label = f"sampler {cls.name!r}" if cls.name else f"sampler class {cls.__name__}"
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, list(valid) + list(also), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    takes = f"its options are: {', '.join(valid)}" if valid else "it takes no options"
    raise ArgumentError(f"{label} has no option {', '.join(hints)}; {takes}")


class NoiseSource:
    r"""Standard normal draws for a batch: from one generator, or one generator per sample.

    With per-sample generators, sample ``i``'s noise comes from generator ``i`` alone, so a
    sample does not depend on its batch-mates (EDM-style per-sample seeds).
    """

    def __init__(self, generator: torch.Generator | Sequence[torch.Generator] | None):
        self.per_sample = isinstance(generator, (list, tuple))
        self.generator = list(generator) if self.per_sample else generator

    def __call__(self, like: Tensor) -> Tensor:
        return self.randn(tuple(like.shape), dtype=like.dtype, device=like.device)

    def randn(self, shape: tuple[int, ...], *, dtype: torch.dtype, device) -> Tensor:
        if not self.per_sample:
            return torch.randn(shape, generator=self.generator, dtype=dtype, device=device)
        if shape[0] != len(self.generator):
            raise ArgumentError(f"{len(self.generator)} per-sample seeds given for a batch of {shape[0]}")
        return torch.stack(
            [torch.randn(shape[1:], generator=g, dtype=dtype, device=device) for g in self.generator]
        )


class SolveContext:
    """Everything a sampler needs besides the state and the time grid (built by :func:`sample`)."""

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        noise: NoiseSource,
        *,
        sampler_name: str,
        record: bool = False,
        progress=None,
        project: Callable[[Tensor, Tensor], Tensor] | None = None,
        check_every: int = 100,
        t_start: float | None = None,
        t_end: float | None = None,
    ):
        self.sde = sde
        self._score_fn = score_fn
        self.noise = noise
        self.sampler_name = sampler_name
        self.nfe = 0
        self.record = record
        self.traj_t: list[Tensor] = []
        self.traj_x: list[Tensor] = []
        self.progress = progress
        self.project = project
        self.check_every = int(check_every)
        self.t_start, self.t_end = t_start, t_end
        self._steps_done = 0
        self._first_bad: Tensor | None = None  # time at which the state first became non-finite

    # ---- score -----------------------------------------------------------------------------
    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """``score_fn(x, t)`` with ``t`` broadcast to ``(batch,)`` and the output checked
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

    @property
    def score_fn(self) -> ScoreFn:
        """The counting score, as a plain ``score_fn`` (for :meth:`SDE.reverse`, torchdiffeq, torchsde)."""
        return self.score

    # ---- after each step ----------------------------------------------------------------------
    def start(self, x: Tensor, t: Tensor) -> Tensor:
        """Register the initial state (applying the constraint) at time ``t``."""
        if self.project is not None:
            x = self.project(x, t)
        self._first_bad = torch.full((), float("nan"), dtype=t.dtype, device=t.device)
        self._flag(x, t)
        if self.record:
            self.traj_t.append(t.detach().reshape(()).clone())
            self.traj_x.append(x.detach().clone())
        return x

    def _flag(self, x: Tensor, t: Tensor) -> None:
        bad = ~torch.isfinite(x).all()
        fresh = bad & torch.isnan(self._first_bad)
        self._first_bad = torch.where(fresh, t.reshape(()).to(self._first_bad.dtype), self._first_bad)

    def step_done(self, x: Tensor, t: Tensor) -> Tensor:
        """Take the state reached at time ``t``: constrain, flag non-finite values, record."""
        if self.project is not None:
            x = self.project(x, t)
        self._flag(x, t)
        if self.record:
            self.traj_t.append(t.detach().reshape(()).clone())
            self.traj_x.append(x.detach().clone())
        self._steps_done += 1
        if self.progress is not None:
            self.progress.update(1)
        if self.check_every > 0 and self._steps_done % self.check_every == 0:
            self.check_finite()  # one host read every `check_every` steps
        return x

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if the state has been non-finite at some point."""
        if self._first_bad is None:
            return
        if not bool(torch.isnan(self._first_bad)):
            t_bad = float(self._first_bad)
            raise NonFiniteError(
                f"sampler {self.sampler_name!r} produced non-finite values (NaN or inf): first seen at "
                f"t={t_bad:.6g}, integrating from t={self.t_start:.6g} down to eps={self.t_end:.6g}. "
                "Check that score_fn returns finite values there, or use more steps."
            )

    def trajectory(self) -> Trajectory | None:
        if not self.record or not self.traj_t:
            return None
        return Trajectory(torch.stack(self.traj_t), torch.stack(self.traj_x))


class Sampler(abc.ABC):
    r"""Base class of samplers: integrate from ``times[0]`` down to ``times[-1]``.

    Subclasses set the class attributes and implement :meth:`solve`. Options are keyword
    arguments of ``__init__``, checked there.

    Class attributes:
        name: registry name (``sample(..., sampler=name)``).
        order: convergence order in the step size (weak order for stochastic samplers), or
            ``None`` when it has none (Langevin-type samplers).
        stochastic: whether it draws noise along the way.
        default_steps: steps used when the caller gives none (``None``: adaptive).
        default_grid: the time grid used when the caller gives none.
        needs_linear: whether it needs a :class:`~scoresde.sde.LinearSDEBase` (closed-form marginals).
    """

    name: ClassVar[str] = ""
    order: float | None = None
    stochastic: ClassVar[bool] = False
    default_steps: ClassVar[int | None] = 1000
    default_grid: ClassVar[str] = "uniform"
    needs_linear: ClassVar[bool] = False
    supports_projection: ClassVar[bool] = True  # can apply a constraint after every step

    def check_sde(self, sde: SDE) -> None:
        """Raise ``ValueError`` if this sampler cannot serve ``sde``."""
        if not isinstance(sde, SDE):
            raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        if self.needs_linear and not isinstance(sde, LinearSDEBase):
            raise ArgumentError(
                f"sampler {self.name!r} needs a linear SDE with closed-form marginals (a LinearSDEBase: "
                f"VPSDE, SubVPSDE, VESDE, DiscreteVPSDE or LinearSDE), got {type(sde).__name__}; samplers that "
                "serve any SDE: euler_maruyama, reverse_diffusion, pc, ode, torchsde"
            )

    def steps_for(self, steps: int | None) -> int | None:
        """The number of steps to take (``None``: the sampler picks its own, e.g. adaptive ODE)."""
        return self.default_steps if steps is None else steps

    @abc.abstractmethod
    def solve(self, ctx: SolveContext, x: Tensor, times: Tensor | None) -> Tensor:
        """Integrate the state ``x`` at ``times[0]`` down to ``times[-1]`` and return it.

        Each step ends with ``x = ctx.step_done(x, t_next)``.
        """

    def options(self) -> dict:
        """The sampler's options, for ``repr`` and benchmark tables."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def batch_time(t: Tensor, x: Tensor) -> Tensor:
    """A 0-d time broadcast to ``(batch,)`` (a view, no copy)."""
    return t.expand(x.shape[0])


def per_sample(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(batch,)`` or 0-d coefficient to broadcast against ``x``."""
    if coef.dim() == 0:
        return coef
    return coef.reshape(coef.shape + (1,) * (x.dim() - 1))
