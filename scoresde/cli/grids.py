"""Fitted grids on the command line: ``scoresde fit-grid`` writes one, ``scoresde sample --grid FILE``
reads one, ``scoresde compare --fit-grids`` adds fitted-grid rows next to the fixed grids.

The fit is :func:`scoresde.sampling.optimize_grid` (GITS-style dynamic programming on the model's
own probability-flow trajectories, then a local search on the global error); the file is JSON
(:func:`scoresde.sampling.save_grid`), checked against the SDE and sampler it is used with.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..errors import ArgumentError, check_int, check_optional_int, check_seed
from ..sampling import expected_nfe, get_sampler, load_grid, optimize_grid, sample, save_grid, steps_for_nfe
from .common import (
    ANALYTIC,
    DEFAULTS,
    CLIError,
    build_sampler,
    check_analytic_option,
    check_model_source,
    check_output_file,
    check_sde_option,
    load_cli_model,
    make_sde,
    resolve_device,
    resolve_sampler,
    score_fn_for,
)

#: the calibration draw's seed is offset from --seed, so a grid is not fitted on the draws it is scored on
FIT_SEED_OFFSET = 100_003


def read_grid_option(path: str | None, sde=None, sampler=None):
    """``--grid FILE`` as a :class:`~scoresde.sampling.GridFile` (None without one); every problem
    with the file, or a file fitted for another SDE or sampler, is one CLIError naming --grid."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--grid {path!r} does not exist or is not a file (write one with `scoresde fit-grid`)")
    try:
        return load_grid(p, sde=sde, sampler=sampler)
    except ArgumentError as err:
        raise CLIError(f"--grid {path!r}: {str(err).splitlines()[0]}") from None


def fit_grid_cmd(args: argparse.Namespace) -> int:
    """``scoresde fit-grid``: fit a grid for a sampler and a number of steps, write it as JSON."""
    sources = (args.checkpoint is not None) + (args.diffusers is not None) + (args.analytic is not None)
    if sources != 1:
        raise CLIError("give exactly one of --checkpoint (a trained model), --diffusers DIR (a diffusers model) or "
                       "--analytic NAME (an exact mixture score)")
    source = check_model_source(args, required=False)
    check_analytic_option(args.analytic)
    sampler = build_sampler(resolve_sampler(args.sampler), args.option)
    steps = check_optional_int("--steps", args.steps)
    nfe = check_optional_int("--nfe", args.nfe)
    if (steps is None) == (nfe is None):
        raise CLIError("give --steps (the grid's steps) or --nfe (an evaluation budget, final denoising step "
                       "included), one of them")
    check_int("--calibration", args.calibration, 2)
    check_optional_int("--candidates", args.candidates, 2)
    check_seed("--seed", args.seed)
    check_sde_option(args.sde)
    device = resolve_device(args.device)
    out = check_output_file(args.out, "--out")
    torch.manual_seed(args.seed)
    if source is not None:
        run = load_cli_model(args, device)
        sde, score, event, what = run.sde, score_fn_for(run.model), tuple(run.data_shape), source
    else:
        gmm = ANALYTIC[args.analytic]()
        sde = make_sde(args.sde or "vp", DEFAULTS["sde"])
        score = gmm.to(device=device, dtype=torch.float32).score_fn(sde)
        event, what = (gmm.dim,), f"the exact {args.analytic} score"
    if nfe is not None:
        steps = steps_for_nfe(sampler, sde, nfe)
    start = time.perf_counter()
    try:
        info = optimize_grid(score, sde, (1, *event), steps, sampler, seed=args.seed + FIT_SEED_OFFSET,
                             calibration=args.calibration, candidates=args.candidates, refine=not args.no_refine,
                             device=device, return_info=True)
    except ArgumentError as err:
        raise CLIError(f"cannot fit a grid for --sampler {sampler.name}: {str(err).splitlines()[0]}") from None
    seconds = time.perf_counter() - start
    save_grid(out, info.times, sde=sde, sampler=sampler, source=what, calibration=args.calibration,
              candidates=len(info.candidates), seed=args.seed, refined=not args.no_refine,
              evaluations=info.evaluations, relative_cost=info.relative_cost, objective=info.cost)
    runs = expected_nfe(sampler, sde, steps)
    print(f"grid of {steps} steps for {sampler.name} ({runs} evaluations a sample) fitted to {what} under {sde!r} "
          f"in {seconds:.1f} s: {info.evaluations} single-sample evaluations "
          f"({info.relative_cost:.1f}x one 1000-sample run) -> {out}")
    print("times: " + ", ".join(f"{t:.6g}" for t in info.times.tolist()))
    return 0


def fitted_rows(score_fns: dict, sde, shape, samplers, nfes, reference, *, gmm=None, seed: int = 0, device="cpu",
                quality=None) -> tuple[list[dict], list[str]]:
    """``compare --fit-grids``: for each score, sampler and budget that a fitted grid serves, a row
    ``sampler = "NAME[fitted]"`` (the grid fitted on calibration draws other than the compared ones);
    and notes for the samplers it cannot serve."""
    rows, notes = [], []
    for label, score in score_fns.items():
        for name in samplers:
            smp = get_sampler(name)
            for budget in nfes:
                steps = steps_for_nfe(smp, sde, budget) if expected_nfe(smp, sde, 1) is not None else None
                if steps is None or expected_nfe(smp, sde, steps) > budget:
                    continue
                try:
                    grid = optimize_grid(score, sde, shape, steps, smp, seed=seed + FIT_SEED_OFFSET, device=device)
                except ArgumentError as err:
                    notes.append(f"{name}: no fitted grid ({str(err).splitlines()[0]})")
                    break
                start = time.perf_counter()
                res = sample(score, sde, tuple(shape), sampler=smp, grid=grid, seed=seed, device=device)
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                rows.append({"score": label, "sampler": f"{name}[fitted]", "nfe_budget": budget, "steps": steps,
                             "nfe": int(res.nfe), "seconds": time.perf_counter() - start, "grid": "fitted",
                             **quality(res.x.detach().cpu(), reference, gmm)})
    return rows, notes
