"""The ``sample`` entry point: one call for every sampler.

It checks every argument before any evaluation, builds the grid, the starting state, the
conditioned score and the :class:`~scoresde.sampling.context.Context`, and hands them to the driver
(:func:`~scoresde.sampling.driver.run`)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import (
    SOLVER_DTYPES,
    ArgumentError,
    check_batch,
    check_bool,
    check_choice,
    check_device,
    check_eps,
    check_int,
    check_positive,
    check_range,
    check_shape,
)
from ..sde import SDE, LinearSDEBase, ScoreFn
from .base import Sampler, SampleResult
from .conditioning import INPAINT_METHODS, Inpainting, check_cond, conditional_score
from .context import Context
from .driver import run
from .grids import time_grid
from .noise import NoiseSource, make_generators
from .registry import check_serves, make_sampler


def _start_state(name: str, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``x_start`` / ``x_init``: a finite float32/float64 tensor of the samples' shape."""
    check_batch(name, x)
    if tuple(x.shape) != shape:
        raise ArgumentError(f"{name} must have shape {shape} (the samples' shape), got {tuple(x.shape)}")
    return x


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
    cond: Tensor | int | Sequence[int] | None = None,
    guidance: float | None = None,
    check_every: int = 100,
    differentiable: bool = False,
    **options,
) -> SampleResult:
    r"""Draw samples by integrating a reverse-time process of ``sde`` driven by ``score_fn``.

    Args:
        score_fn: ``score_fn(x, t) -> Tensor`` of ``x``'s shape, dtype and device, ``t`` of shape ``(batch,)``.
        sde: the forward SDE.
        shape: ``(batch, *event_shape)`` of the samples, positive integers.
        sampler: a name from :func:`available_samplers` or a :class:`Sampler` instance; ``**options``
            go to its constructor (e.g. ``snr=``, ``method=``, ``order=``); one it does not take is
            refused by name.
        steps: number of steps (default per sampler; for the adaptive ``ode`` only the number of
            trajectory points).
        seed: an integer in [0, 2**63 - 1], or one per sample (then a sample does not depend on its
            batch-mates); or pass ``generator`` (one, or one per sample).
        device, dtype: of the samples (default: those of ``x_init``/``x_start``, the generator's
            device, the default dtype); float32 or float64.
        eps: the last time, in (0, T) (default: the sampler's for this SDE,
            :meth:`Sampler.default_eps`, which is ``sde.eps`` unless the sampler measured better).
        denoise: end with Tweedie's denoising step :math:`\hat x_0 = (x_\varepsilon + \sigma_\varepsilon^2
            s_\theta(x_\varepsilon, \varepsilon))/\alpha_\varepsilon` (one more evaluation; linear SDEs only,
            skipped for others).
        return_trajectory: keep the states at every grid time (``result.trajectory``).
        progress: show a tqdm progress bar.
        grid: ``"uniform"``, ``"log_snr"``, ``"edm"`` (with ``rho`` > 0) or a decreasing sequence of times
            (default per sampler); given times fix ``t_start`` and ``eps``.
        t_start: the first time, in (eps, T] (default ``sde.T``).
        x_init: data to start from, noised to ``t_start`` by the forward kernel (SDEdit, Meng et al. 2022).
        x_start: a state at ``t_start`` to start from as is (e.g. an ODE encoding).
        mask, known: inpainting: True where the value is known, and the known values
            (broadcast to ``shape``); ``inpaint`` is ``"replacement"`` or ``"tweedie"``
            (see :mod:`scoresde.sampling.conditioning`).
        cond: class labels for a class-conditional ``score_fn(x, t, y=labels)`` (e.g. a
            ``ScoreModel(..., num_classes=K)``): one label for every sample, or a LongTensor of
            shape ``(batch,)``, values in ``[0, K)``; shape ``(batch, m)`` composes ``m`` conditions
            per sample (:func:`~scoresde.sampling.conditioning.conditional_score`).
        guidance: the classifier-free guidance weight :math:`w` (needs ``cond``; default 1): the
            score is :math:`s(x,t) + w\,(s(x,t\mid y) - s(x,t))`, so ``guidance=1`` samples the
            conditional model, ``0`` the unconditional one (``score_fn(x, t)``, the null class) and
            ``w > 1`` sharper conditioning. For ``w`` other than 0 and 1 each counted evaluation
            (``nfe``) calls ``score_fn`` twice, conditional and unconditional.
        check_every: read the non-finite flag on the host every this many steps (0: at the end only).
        differentiable: run with autograd recording, so that ``result.x`` can be differentiated with
            respect to the score's parameters or ``x_start`` (memory then grows with the steps). By
            default sampling runs under ``torch.no_grad()``: the result carries no graph, whatever
            the caller's grad mode. Samplers that need gradients inside a step (classifier guidance,
            ``inpaint="tweedie"``, the divergence of a state-dependent diffusion) switch them on
            locally either way.

    Returns:
        :class:`SampleResult` with ``x``, ``nfe``, ``times`` and ``trajectory``.

    Raises:
        ArgumentError: on bad input (a ``ValueError`` naming the argument: unknown sampler or option,
            ``steps <= 0``, an SDE the sampler cannot serve, a ``score_fn`` that fails on its first
            call or answers with another shape, dtype or device, ...).
        NonFiniteError: when the state becomes NaN/inf; the message names the time reached.
    """
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise ArgumentError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    smp = make_sampler(sampler, options, also=_OWN_ARGS)
    check_serves(smp, sde)
    shape = check_shape("shape", shape)
    if steps is not None:
        check_int("steps", steps)
    n_steps = smp.steps_for(steps)
    for name, flag in (("denoise", denoise), ("return_trajectory", return_trajectory), ("progress", progress),
                       ("differentiable", differentiable)):
        check_bool(name, flag)
    check_every = check_int("check_every", check_every, minimum=0)
    rho = check_positive("rho", rho)
    check_choice("inpaint", inpaint, INPAINT_METHODS)
    labels, weight = check_cond(score_fn, cond, guidance, shape[0])

    # the starting state fixes the default dtype and device
    if x_init is not None and x_start is not None:
        raise ArgumentError("give x_init (data to noise) or x_start (a state at t_start), not both")
    ref_name, ref = ("x_start", x_start) if x_start is not None else ("x_init", x_init)
    if ref is not None:
        _start_state(ref_name, ref, shape)
        dtype = dtype or ref.dtype
        device = device if device is not None else ref.device
    if device is not None:
        device = check_device("device", device)
    gens = make_generators(seed, generator, shape[0], device)
    if device is None:
        device = (gens[0] if isinstance(gens, list) else gens).device if gens is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    if dtype not in SOLVER_DTYPES:
        raise ArgumentError(
            f"dtype must be torch.float32 or torch.float64, got {dtype!r}: the time grid and the solver state "
            "need their range and resolution (the score network may still run in half precision inside score_fn)"
        )
    noise = NoiseSource(gens)

    # the time grid (None: an adaptive solver with no trajectory points asked)
    t_end = check_eps(smp.default_eps(sde) if eps is None else eps, sde.T)
    t0 = sde.T if t_start is None else check_range("t_start", t_start, t_end, sde.T, high_closed=True)
    if grid is not None and not isinstance(grid, str):
        times = time_grid(sde, 0, sde.T, t_end, grid)
        if steps is not None and steps != len(times) - 1:
            raise ArgumentError(f"steps={steps} disagrees with the {len(times) - 1} steps of the given grid")
        for name, given, value in (("t_start", t_start, times[0]), ("eps", eps, times[-1])):
            if given is not None and abs(float(given) - float(value)) > 1e-12 * sde.T:
                raise ArgumentError(f"{name}={given!r} disagrees with the given grid, which runs from "
                                    f"{float(times[0]):g} to {float(times[-1]):g}; give one or the other")
        t0, t_end = float(times[0]), float(times[-1])
    elif n_steps is None:
        times = torch.tensor([t0, t_end], dtype=torch.float64)
    else:
        times = time_grid(sde, n_steps, t0, t_end, grid or smp.default_grid, rho=rho)
    times_host = times.tolist()  # the grid as floats, read once before sampling
    times = times.to(dtype=dtype, device=device)

    with torch.set_grad_enabled(differentiable):
        x = _initial_state(sde, shape, times[0], x_start, x_init, noise, dtype, device)

        # conditioning: class labels first, then constraints on top of the (guided) score
        fn, project, inp = score_fn, None, None
        if labels is not None:
            fn = conditional_score(score_fn, labels.to(device), weight)
        if mask is not None or known is not None:
            if mask is None or known is None:
                raise ArgumentError("inpainting needs both mask and known")
            inp = Inpainting(sde, shape, mask, known, inpaint, dtype, device)
            if inpaint == "tweedie":
                fn = inp.conditional_score(fn)
            else:
                if smp.solves_whole:
                    raise ArgumentError(
                        f"sampler {smp.name!r} cannot apply inpaint='replacement' between steps (it hands the whole "
                        "solve to a library); use inpaint='tweedie' or a stepping sampler"
                    )
                project = inp.project(noise)

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(times) - 1, desc=f"sample[{smp.name}]")
        ctx = Context(sde, fn, noise, times, times_host=times_host, sampler_name=smp.name, record=return_trajectory,
                      progress=bar, project=project, check_every=check_every)
        try:
            x = run(smp, ctx, x, denoise=denoise)
            if inp is not None:
                x = inp.finish(x)
        finally:
            if bar is not None:
                bar.close()
    return SampleResult(x=x, nfe=ctx.nfe, times=times if (n_steps is not None or grid is not None) else None,
                        trajectory=ctx.trajectory(), sampler=smp)


def _initial_state(sde: SDE, shape, t0: Tensor, x_start, x_init, noise: NoiseSource, dtype, device) -> Tensor:
    """The state at ``t0``: ``x_start`` as is, ``x_init`` noised by the forward kernel, or a prior draw."""
    if x_start is not None:
        return x_start.to(dtype=dtype, device=device)
    if x_init is not None:
        if not isinstance(sde, LinearSDEBase):
            raise ArgumentError(f"x_init (SDEdit) needs a LinearSDE (LinearSDEBase: closed-form marginals) to noise "
                                f"the data, got {type(sde).__name__}")
        mean, std = sde.marginal_prob(x_init.to(dtype=dtype, device=device), t0)
        return mean + std * noise.randn(shape, dtype=dtype, device=device)
    if noise.per_sample:
        return torch.cat([sde.prior_sample((1,) + shape[1:], generator=g, device=device, dtype=dtype)
                          for g in noise.generator])
    return sde.prior_sample(shape, generator=noise.generator, device=device, dtype=dtype)


#: sample()'s own keyword arguments, suggested when one is misspelt among the sampler options
_OWN_ARGS = tuple(p for p in inspect.signature(sample).parameters if p != "options")
