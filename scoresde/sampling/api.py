"""The ``sample`` entry point: one call for every sampler."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError, check_int
from ..sde import SDE, LinearSDE
from .base import NoiseSource, Sampler, SampleResult, ScoreFn, SolveContext, get_sampler
from .conditioning import Inpainting
from .grids import time_grid


def _generators(seed, generator, batch: int, device) -> torch.Generator | list[torch.Generator] | None:
    """One generator, or one per sample (from a sequence of seeds or of generators)."""
    if seed is not None and generator is not None:
        raise ArgumentError("give seed or generator, not both")
    if generator is not None:
        if isinstance(generator, torch.Generator):
            return generator
        gens = list(generator)
        if len(gens) != batch or not all(isinstance(g, torch.Generator) for g in gens):
            raise ArgumentError(f"generator must be a torch.Generator or a list of {batch} generators (one per sample)")
        return gens
    if seed is None:
        return None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(seed, bool):
        raise ArgumentError(f"seed must be an integer or a sequence of {batch} integers, got {seed!r}")
    if isinstance(seed, int):
        return torch.Generator(device=dev).manual_seed(seed)
    if isinstance(seed, Tensor):
        seed = seed.tolist()
    seeds = list(seed)
    if len(seeds) != batch or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ArgumentError(f"seed must be an integer or a sequence of {batch} integers (one per sample), got {seed!r}")
    return [torch.Generator(device=dev).manual_seed(s) for s in seeds]


def sample(
    score_fn: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    *,
    sampler: str | Sampler = "euler_maruyama",
    steps: int | None = None,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    eps: float | None = None,
    denoise: bool = True,
    return_trajectory: bool = False,
    progress: bool = False,
    grid: str | Sequence[float] | Tensor | None = None,
    rho: float = 7.0,
    t_start: float | None = None,
    x_init: Tensor | None = None,
    x_start: Tensor | None = None,
    mask: Tensor | None = None,
    known: Tensor | None = None,
    inpaint: str = "replacement",
    check_every: int = 100,
    **options,
) -> SampleResult:
    r"""Draw samples by integrating a reverse-time process of ``sde`` driven by ``score_fn``.

    Args:
        score_fn: ``score_fn(x, t) -> Tensor`` of ``x``'s shape, ``t`` of shape ``(batch,)``.
        sde: the forward SDE.
        shape: ``(batch, *event_shape)`` of the samples.
        sampler: a name from :func:`available_samplers` or a :class:`Sampler` instance; ``**options``
            go to its constructor (e.g. ``snr=``, ``method=``, ``order=``).
        steps: number of steps (default per sampler; for the adaptive ``ode`` only the number of
            trajectory points).
        seed: an integer, or one integer per sample (then a sample does not depend on its
            batch-mates); or pass ``generator`` (one, or one per sample).
        device, dtype: of the samples (default: those of ``x_init``/``x_start``, the generator's
            device, the default dtype).
        eps: the last time (default ``sde.eps``).
        denoise: end with Tweedie's denoising step :math:`\hat x_0 = (x_\varepsilon + \sigma_\varepsilon^2
            s_\theta(x_\varepsilon, \varepsilon))/\alpha_\varepsilon` (one more evaluation; linear SDEs only,
            skipped for others).
        return_trajectory: keep the states at every grid time (``result.trajectory``).
        progress: show a tqdm progress bar.
        grid: ``"uniform"``, ``"log_snr"``, ``"edm"`` (with ``rho``) or a decreasing sequence of times
            (default per sampler).
        t_start: the first time (default ``sde.T``).
        x_init: data to start from, noised to ``t_start`` by the forward kernel (SDEdit, Meng et al. 2022).
        x_start: a state at ``t_start`` to start from as is (e.g. an ODE encoding).
        mask, known: inpainting: True where the value is known, and the known values
            (broadcast to ``shape``); ``inpaint`` is ``"replacement"`` or ``"tweedie"``
            (see :mod:`scoresde.sampling.conditioning`).
        check_every: read the non-finite flag on the host every this many steps (0: at the end only).

    Returns:
        :class:`SampleResult` with ``x``, ``nfe``, ``times`` and ``trajectory``.

    Raises:
        ValueError: on bad input (unknown sampler, ``steps <= 0``, an SDE the sampler cannot serve,
            a ``score_fn`` output of the wrong shape, ...).
        NonFiniteError: when the state becomes NaN/inf; the message names the time reached.
    """
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise ArgumentError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    smp = get_sampler(sampler, **options)
    smp.check_sde(sde)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ArgumentError(f"shape must be a sequence of integers, got {shape!r}") from None
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ArgumentError(f"shape must be (batch, *event_shape) with sizes >= 1, got {shape}")
    if steps is not None:
        check_int("steps", steps)
    n_steps = smp.steps_for(steps)

    ref = x_start if x_start is not None else x_init
    if ref is not None:
        if not isinstance(ref, Tensor) or not ref.is_floating_point():
            raise ArgumentError("x_init / x_start must be floating-point tensors")
        if tuple(ref.shape) != shape:
            raise ArgumentError(f"x_init / x_start must have shape {shape}, got {tuple(ref.shape)}")
        dtype = dtype or ref.dtype
        device = device if device is not None else ref.device
    if x_init is not None and x_start is not None:
        raise ArgumentError("give x_init (data to noise) or x_start (a state at t_start), not both")
    gens = _generators(seed, generator, shape[0], device)
    if device is None:
        device = (gens[0] if isinstance(gens, list) else gens).device if gens is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise ArgumentError(f"dtype must be a floating-point dtype, got {dtype}")
    noise = NoiseSource(gens)

    t_end = float(sde.eps if eps is None else eps)
    t0 = float(sde.T if t_start is None else t_start)
    if not 0 < t_end < sde.T:
        raise ArgumentError(f"eps must lie in (0, T) = (0, {sde.T:g}), got {eps!r}")
    if not t_end < t0 <= sde.T:
        raise ArgumentError(f"t_start must lie in (eps, T] = ({t_end:g}, {sde.T:g}], got {t_start!r}")

    # the time grid (None: an adaptive solver with no trajectory points asked)
    if grid is not None and not isinstance(grid, str):
        times = time_grid(sde, 0, t0, t_end, grid)
        if steps is not None and steps != len(times) - 1:
            raise ArgumentError(f"steps={steps} disagrees with the {len(times) - 1} steps of the given grid")
        t0, t_end = float(times[0]), float(times[-1])
    elif n_steps is None:
        times = torch.tensor([t0, t_end], dtype=torch.float64)
    else:
        times = time_grid(sde, n_steps, t0, t_end, grid or smp.default_grid, rho=rho)
    times = times.to(dtype=dtype, device=device)

    # the starting state
    if x_start is not None:
        x = x_start.to(dtype=dtype, device=device)
    elif x_init is not None:
        if not isinstance(sde, LinearSDE):
            raise ArgumentError(f"x_init (SDEdit) needs a LinearSDE to noise the data, got {type(sde).__name__}")
        mean, std = sde.marginal_prob(x_init.to(dtype=dtype, device=device), times[0])
        x = mean + std * noise.randn(shape, dtype=dtype, device=device)
    elif noise.per_sample:
        x = torch.cat([sde.prior_sample((1,) + shape[1:], generator=g, device=device, dtype=dtype)
                       for g in noise.generator])
    else:
        x = sde.prior_sample(shape, generator=noise.generator, device=device, dtype=dtype)

    # conditioning
    fn, project, inp = score_fn, None, None
    if mask is not None or known is not None:
        if mask is None or known is None:
            raise ArgumentError("inpainting needs both mask and known")
        inp = Inpainting(sde, shape, mask, known, inpaint, dtype, device)
        if inpaint == "tweedie":
            fn = inp.conditional_score(score_fn)
        else:
            if not smp.supports_projection:
                raise ArgumentError(
                    f"sampler {smp.name!r} cannot apply inpaint='replacement' between steps; "
                    "use inpaint='tweedie' or a stepping sampler"
                )
            project = inp.project(noise)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(times) - 1, desc=f"sample[{smp.name}]")
    ctx = SolveContext(sde, fn, noise, sampler_name=smp.name, record=return_trajectory, progress=bar,
                       project=project, check_every=check_every, t_start=t0, t_end=t_end)
    try:
        x = ctx.start(x, times[0])
        x = smp.solve(ctx, x, times)
        ctx.check_finite()
        if denoise and isinstance(sde, LinearSDE):
            t = times[-1]
            a, s = sde.marginal(t)
            x = (x + s.square() * ctx.score(x, t)) / a
            ctx._flag(x, t)
            ctx.check_finite()
        if inp is not None:
            x = inp.finish(x)
    finally:
        if bar is not None:
            bar.close()
    traj = ctx.trajectory()
    return SampleResult(x=x, nfe=ctx.nfe, times=times if (n_steps is not None or grid is not None) else None,
                        trajectory=traj, sampler=smp)
