"""``scoresde train | sample | likelihood | compare | export``: one function per sub-command.

Each checks all of its arguments first (a bad one is one line naming it), then loads what it
needs, then computes, then writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import analytic
from .._files import atomic_write
from ..data import ImageData, MixtureDataset
from ..distributed_sampling import sample_in_chunks
from ..errors import check_int, check_optional_int, check_real, check_seed, check_tolerance
from ..likelihood import log_likelihood, nll_bound
from ..sde import VPSDE, LinearSDEBase
from ..training import DSMLoss, SlicedScoreMatchingLoss, Trainer
from ..training.distributed import default_device, env_world_size, setup, shutdown
from ..training.run_folder import RunFolder
from .common import (
    ANALYTIC,
    DEFAULTS,
    CLIError,
    build_data,
    build_model,
    build_sampler,
    check_analytic_option,
    check_data_file,
    check_model_source,
    check_output_file,
    check_plot_file,
    check_sde_option,
    check_writable_dir,
    cli_metadata,
    data_spec_for,
    label_tensor,
    load_cli_model,
    load_cli_run,
    load_config,
    make_sde,
    parse_int_list,
    parse_labels,
    resolve_device,
    resolve_sampler,
    run_data_spec,
    score_fn_for,
    show_progress,
    train_options,
)
from .comparison import noise_floor_band, plot_comparison, quality, run_comparison, summarise, write_csv
from .grids import fitted_rows, read_grid_option


# ---- train -----------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.seed is not None:
        cfg["seed"] = cfg["train"]["seed"] = check_seed("--seed", args.seed)
    if args.device is not None:
        cfg["device"] = args.device
    if args.out is not None:
        cfg["out"] = args.out
    check_sde_option(args.sde)
    sde_name = args.sde or cfg["sde"]["name"]
    options = train_options(cfg)
    options["progress"] = options["progress"] and show_progress(args)
    # under torchrun with no device given, the Trainer puts each rank on cuda:LOCAL_RANK (or cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = None if launched and cfg["device"] is None else \
        resolve_device(cfg["device"], "--device" if args.device is not None else "device")
    out = Path(cfg["out"])
    folder = RunFolder(out)  # refuse a folder that cannot be used before building anything (read only)
    folder.check_entries()
    if not args.resume:
        folder.check_free()
    torch.manual_seed(cfg["seed"])
    sde = make_sde(sde_name, cfg["sde"])
    data = build_data(cfg["data"], "train")
    shape = tuple(data[0].shape)
    k = cfg["model"]["num_classes"]
    if k is not None and getattr(data, "labels", None) is None:
        raise CLIError(f"model.num_classes={k} but data.name {cfg['data']['name']!r} carries no class labels "
                       f"(labelled data: ring, its 8 components; digits, its 10 digits)")
    if k is not None and data.num_classes > k:
        raise CLIError(f"model.num_classes={k} but the labels of data.name {cfg['data']['name']!r} go up to "
                       f"{data.num_classes - 1}: set model.num_classes={data.num_classes}")
    model = build_model(cfg, sde, shape)
    if isinstance(sde, LinearSDEBase):
        loss = DSMLoss(sde, cfg["loss"]["weighting"], label_dropout=cfg["loss"]["label_dropout"])
    else:  # no closed-form kernel: sliced score matching on simulated x_t
        loss = SlicedScoreMatchingLoss(sde, label_dropout=cfg["loss"]["label_dropout"])
    trainer = Trainer(model, loss, data, out, device=device, metadata=cli_metadata(cfg, sde_name), **options)
    try:
        if args.resume:
            start = trainer.resume()
        else:
            trainer.start()
            start = 0
        say = print if trainer.dist.is_main else (lambda *a, **k: None)  # one report, from rank 0
        say(f"training {type(model.net).__name__} on {cfg['data']['name']} {shape} under {sde!r}"
            f"{f', resumed at step {start}' if start else ''}"
            f"{f' on {trainer.dist.world_size} processes' if trainer.dist.enabled else ''}; writing to {out}")
        trainer.fit()
        say(f"done: {trainer.step} steps; checkpoint {trainer.last_checkpoint}")
    except BaseException:
        shutdown(trainer.dist, sync=False)  # a failed peer would never reach close()'s barrier
        raise
    trainer.close()
    return 0


# ---- sample ----------------------------------------------------------------------------------
def sample_cmd(args: argparse.Namespace) -> int:
    sampler = build_sampler(resolve_sampler(args.sampler), args.option)
    check_int("--n", args.n, 1)
    check_int("--batch-size", args.batch_size, 1)
    check_optional_int("--steps", args.steps)
    check_seed("--seed", args.seed)
    check_sde_option(args.sde)
    check_model_source(args)
    grid = read_grid_option(args.grid)  # the file itself now; its SDE and sampler once the model is loaded
    labels = parse_labels(args.label)
    if args.guidance is not None and labels is None:
        raise CLIError("--guidance weighs the conditional score of --label against the unconditional one: give --label")
    guidance = None if args.guidance is None else check_real("--guidance", args.guidance)
    # under torchrun with no device given, each rank takes cuda:LOCAL_RANK (or the cpu), as `train` does
    launched = env_world_size() > 1
    device = (default_device() or torch.device("cpu")) if launched and args.device is None else \
        resolve_device(args.device)
    out = check_output_file(args.out, "--out")
    plot = check_plot_file(args.plot, "--plot") if args.plot else None
    torch.manual_seed(args.seed)
    run = load_cli_model(args, device)
    if plot is not None and not (len(run.data_shape) == 3 or run.data_shape == (2,)):
        raise CLIError(f"--plot draws 2-D points or images; this run's samples have shape {run.data_shape}")
    shape = (args.n, *run.data_shape)
    grid_kw = {}
    if grid is not None:
        grid = read_grid_option(args.grid, run.sde, sampler)
        if args.steps is not None and args.steps != grid.steps:
            raise CLIError(f"--steps {args.steps} disagrees with the {grid.steps} steps of --grid {args.grid!r}; "
                           "leave --steps out")
        grid_kw = {"grid": grid.times}
    cond = None if labels is None else label_tensor(labels, args.n, run.model)
    # every rank got here with the same checks passed; the chunks are shared from here on
    info = setup(device)
    try:
        res = sample_in_chunks(score_fn_for(run.model), run.sde, shape, seed=args.seed, batch_size=args.batch_size,
                               sampler=sampler, steps=args.steps, device=device, cond=cond, guidance=guidance,
                               progress=show_progress(args) and info.is_main, **grid_kw)
        if info.is_main:
            _write_samples(args, res, sampler.name, cond, guidance, out, plot, run)
    except BaseException:
        shutdown(info, sync=False)  # a failed peer would never reach the barrier
        raise
    shutdown(info)
    return 0


def _write_samples(args, res, sampler_name: str, cond, guidance, out: Path, plot: Path | None, run) -> None:
    """Rank 0's part: the .npz (and plot) of the gathered samples, and the report."""
    x = res.x
    with atomic_write(out) as f:
        extra = {} if cond is None else {"labels": cond.numpy(), "guidance": 1.0 if guidance is None else guidance}
        seeds = {"seeds": np.array(res.seeds, dtype=np.int64)} if res.seeds is not None else \
            {"chunk_seeds": np.array(res.chunk_seeds, dtype=np.int64)}
        np.savez(f, x=x.numpy(), nfe=res.nfe, sampler=sampler_name, seconds=res.seconds, seed=args.seed,
                 seeding=res.seeding, batch_size=args.batch_size, world_size=res.world_size, **seeds, **extra)
    if plot is not None:
        from ..viz import save_figure  # matplotlib only when plotting

        save_figure(_sample_figure(x, run_data_spec(run), f"{sampler_name}, {res.nfe} NFE"), plot)
    chunks = len(res.bounds)
    where = f"{chunks} chunk{'s' if chunks > 1 else ''} of <= {args.batch_size}" + \
        (f" on {res.world_size} processes" if res.world_size > 1 else "")
    print(f"{args.n} samples with {sampler_name} ({res.nfe} score evaluations, {where}, {res.seconds:.1f} s) -> {out}"
          + (f"; plot -> {plot}" if plot else ""))
    if res.refusal is not None:
        print(f"note: {res.refusal}; seeded per chunk instead (one generator per chunk of --batch-size): the "
              f"samples depend on --batch-size, not on the number of processes")
    if res.world_size > chunks:
        print(f"note: {res.world_size - chunks} of {res.world_size} processes had no chunk; lower --batch-size")


def _sample_figure(x: torch.Tensor, data_spec: dict | None, title: str):
    from ..viz import image_grid, scatter_panels

    if x.dim() == 4:
        return image_grid(x[:64], title=title)
    density = None
    if data_spec is not None and data_spec["name"] == "ring":  # contours of the true density under the points
        gmm = analytic.ring_mixture()
        density = lambda p: gmm.log_prob(p, 0.0, VPSDE())  # noqa: E731  (t = 0: any linear SDE)
    return scatter_panels({title: x}, density=density)


# ---- likelihood ------------------------------------------------------------------------------
def likelihood_cmd(args: argparse.Namespace) -> int:
    check_int("--n", args.n, 0)
    check_tolerance("--rtol", args.rtol)
    check_tolerance("--atol", args.atol)
    check_optional_int("--chunk-size", args.chunk_size)
    check_int("--probes", args.probes, 1)
    if args.trace == "exact" and args.probes != 1:
        raise CLIError("--probes is the number of Hutchinson / Hutch++ probes; the exact trace has none")
    if args.trace != "exact" and args.exact_method != "auto":
        raise CLIError(f"--exact-method batches the exact trace's products; --trace {args.trace} uses probes")
    check_int("--sde-bound", args.sde_bound, 0)
    check_seed("--seed", args.seed)
    check_sde_option(args.sde)
    source = check_model_source(args)
    check_data_file(args.data, "--data")
    json_out = check_output_file(args.json, "--json") if args.json else None
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    run = load_cli_model(args, device)
    spec = data_spec_for(run, args.data, source)
    if args.frame == "scaled" and not isinstance(run.sde, LinearSDEBase):
        raise CLIError(f"--frame scaled needs a linear SDE (x_t = alpha_t x_0 + sigma_t n); this run's SDE is {run.sde!r}")
    if args.sde_bound and not isinstance(run.sde, LinearSDEBase):
        raise CLIError(f"--sde-bound needs a linear SDE (closed-form marginals); this run's SDE is {run.sde!r}")
    data = build_data(spec, "test", "--data")
    if tuple(data[0].shape) != run.data_shape:
        raise CLIError(f"--data {spec['name']!r} has samples of shape {tuple(data[0].shape)}, but the model "
                       f"was trained on shape {run.data_shape}")
    n = min(args.n, len(data)) if args.n else len(data)
    gen = torch.Generator().manual_seed(args.seed)
    if isinstance(data, ImageData):
        x = data.train_batch(torch.arange(n), gen)  # dequantised with fresh uniform noise
    else:
        x = torch.stack([data[i] for i in range(n)])
    dtype = torch.float64 if x[0].numel() <= 64 else torch.float32
    model = run.model.to(dtype)
    x = x.to(device=device, dtype=dtype)
    start = time.perf_counter()
    res = log_likelihood(model, run.sde, x,  # differentiated through: no no_grad here
                         trace=args.trace, rtol=args.rtol, atol=args.atol, generator=torch.Generator(device).manual_seed(args.seed),
                         chunk_size=args.chunk_size, progress=show_progress(args), probes=args.probes,
                         exact_method=args.exact_method, frame=args.frame)
    seconds = time.perf_counter() - start
    nll = float(-res.log_p.mean())
    se = float(res.log_p.std() / math.sqrt(n)) if n > 1 else float("nan")
    out = {"n": n, "trace": args.trace, "frame": args.frame, "nll_nats": nll, "stderr": se, "nfe": res.nfe,
           "seconds": seconds}
    how = (f"trace={args.trace}" + (f", {args.probes} probes" if args.trace != "exact" else "")
           + (f", frame={args.frame}" if args.frame != "data" else ""))
    if res.exact_method is not None:
        out["exact_method"] = str(res.exact_method)
        how += f" ({res.exact_method})"
    print(f"{n} points of {spec['name']!r}, {how}: NLL {nll:.4f} +- {se:.4f} nats per point "
          f"({res.nfe} function evaluations, {seconds:.1f} s)")
    if res.standard_error is not None:
        point_se = res.standard_error
        out.update(probes=args.probes, point_stderr_median=float(point_se.median()))
        print(f"each point's estimator standard error: median {float(point_se.median()):.4f}, max "
              f"{float(point_se.max()):.4f} nats ({args.probes} probes)")
    log_p_bound = None
    if args.sde_bound:
        with torch.no_grad():
            bound = nll_bound(model, run.sde, x, samples=args.sde_bound, chunk_size=max(1, 8192 // n),
                              generator=torch.Generator(device).manual_seed(args.seed))
        log_p_bound = -bound.nll
        b_nll = float(bound.nll.mean())
        b_se = float(bound.nll.std() / math.sqrt(n)) if n > 1 else float("nan")  # includes the draws' noise
        out.update(sde_bound_nats=b_nll, sde_bound_stderr=b_se, sde_bound_samples=args.sde_bound)
        print(f"reverse-SDE model: NLL <= {b_nll:.4f} +- {b_se:.4f} nats per point "
              f"(variational bound, {args.sde_bound} draws per point)")
    if isinstance(data, ImageData):
        bpd = data.bits_per_dim(res.log_p.cpu().double())
        out["bits_per_dim"] = float(bpd.mean())
        print(f"bits/dim {float(bpd.mean()):.4f} +- {float(bpd.std() / math.sqrt(n)):.4f} "
              f"({data.num_levels} levels on [{data.low:g}, {data.high:g}], uniform dequantisation)")
        if log_p_bound is not None:
            out["sde_bound_bits_per_dim"] = float(data.bits_per_dim(log_p_bound.cpu().double()).mean())
            print(f"reverse-SDE model: bits/dim <= {out['sde_bound_bits_per_dim']:.4f}")
    elif isinstance(data, MixtureDataset):
        true = float(data.nll(x.cpu().double()))
        out["true_nll_nats"] = true
        print(f"true NLL of the same points under the mixture: {true:.4f} nats (model minus true {nll - true:+.4f})")
        if log_p_bound is not None:
            print(f"reverse-SDE bound minus true: {out['sde_bound_nats'] - true:+.4f} nats")
    else:
        out["bits_per_dim"] = nll / (x[0].numel() * math.log(2))
    if json_out is not None:
        with atomic_write(json_out) as f:
            f.write(json.dumps(out, indent=2).encode())
    return 0


# ---- compare ---------------------------------------------------------------------------------
def compare_cmd(args: argparse.Namespace) -> int:
    if (args.checkpoint is not None) + (args.diffusers is not None) + (args.analytic is not None) != 1:
        raise CLIError("give exactly one of --checkpoint (a trained model), --diffusers DIR (a diffusers model) or "
                       "--analytic NAME (an exact score)")
    source = check_model_source(args, required=False)
    check_analytic_option(args.analytic)
    if args.analytic is not None and args.data is not None:
        raise CLIError("--data gives the reference data of a --checkpoint; --analytic has its exact mixture")
    samplers = [resolve_sampler(s.strip()) for s in args.samplers.split(",") if s.strip()]
    if not samplers:
        raise CLIError(f"--samplers must name at least one sampler, got {args.samplers!r}")
    nfes = parse_int_list(args.nfe, "--nfe")
    check_int("--n", args.n, 1)
    check_int("--seeds", args.seeds, 1)
    check_seed("--seed", args.seed)
    check_sde_option(args.sde)
    check_data_file(args.data, "--data")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    out = check_writable_dir(args.out, "--out")
    csv_path, png_path = check_output_file(out / "compare.csv"), check_output_file(out / "compare.png")
    score_fns = {}
    if source is not None:
        run = load_cli_model(args, device)
        sde = run.sde
        spec = data_spec_for(run, args.data, source)
        name = spec["name"]
        score_fns["model"] = score_fn_for(run.model)
        gmm = analytic.ring_mixture() if name == "ring" else None
    else:
        gmm = ANALYTIC[args.analytic]()
        sde = make_sde(args.sde or "vp", DEFAULTS["sde"])
        name = args.analytic
    if gmm is not None:
        if not isinstance(sde, LinearSDEBase):
            raise CLIError(f"the exact mixture score needs a linear SDE (LinearSDEBase), got {type(sde).__name__}")
        score_fns["exact"] = gmm.to(device=device, dtype=torch.float32).score_fn(sde)
        # one exact reference draw per seed, so that the spread over seeds includes the reference's noise
        reference = [gmm.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 7 + 100 * k))
                     for k in range(args.seeds)]
        floor = noise_floor_band(gmm, args.n, pairs=8, seed=args.seed + 50)
        shape = (args.n, gmm.dim)
    else:
        data = build_data(spec, "test", "--data")
        if tuple(data[0].shape) != run.data_shape:
            raise CLIError(f"--data {name!r} has samples of shape {tuple(data[0].shape)}, but the model "
                           f"was trained on shape {run.data_shape}")
        reference = torch.stack([data[i] for i in range(min(args.n, len(data)))])
        floor = None
        shape = (args.n, *run.data_shape)
    rows = run_comparison(score_fns, sde, shape, samplers, nfes, reference, gmm=gmm, device=device,
                          seeds=[args.seed + 100 * k for k in range(args.seeds)], progress=show_progress(args))
    if args.fit_grids:
        for r in rows:
            r.setdefault("grid", "default")
        fitted, notes = fitted_rows(score_fns, sde, shape, samplers, nfes,
                                    reference[0] if isinstance(reference, list) else reference, gmm=gmm, seed=args.seed,
                                    device=device, quality=quality)
        rows += fitted
        for note in dict.fromkeys(notes):
            print(f"note: {note}")
    write_csv(rows, csv_path)
    plot_comparison(rows, png_path, floor=floor, title=f"{name}: " + ("solid = model score, dashed = exact score"
                                                                       if len(score_fns) > 1 else "quality and time vs NFE"))
    width = max(len(r["sampler"]) for r in rows) if rows else 7
    print(f"{'score':<6} {'sampler':<{width}} {'nfe':>5} {'sliced_w2':>10} {'+-s.e.':>7} {'seconds':>8}  (mean of seeds)")
    for r in summarise(rows):
        print(f"{r['score']:<6} {r['sampler']:<{width}} {r['nfe']:>5} {r['sliced_w2']:>10.4f} "
              f"{r['sliced_w2_se']:>7.4f} {r['seconds']:>8.2f}")
    if floor is not None:
        print(f"noise floor (8 pairs of exact draws of {args.n}): sliced W2 {min(floor['sliced_w2']):.4f} to "
              f"{max(floor['sliced_w2']):.4f}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


# ---- export ----------------------------------------------------------------------------------
def export_cmd(args: argparse.Namespace) -> int:
    check_sde_option(args.sde)
    out = check_output_file(args.out, "--out")
    if out.suffix != ".safetensors":
        raise CLIError(f"--out {str(out)!r} must end in .safetensors")
    run = load_cli_run(args.checkpoint, torch.device("cpu"), args.sde, ema=not args.raw)
    run.save_safetensors(out)
    print(f"{run.weights} weights of step {run.step} ({len(run.model.state_dict())} tensors) -> {out}")
    return 0


# ---- distill ---------------------------------------------------------------------------------
def distill_cmd(args: argparse.Namespace) -> int:
    """Progressive distillation of a run's DDIM sampler (ss.distill); one run folder per round."""
    from ..training.distillation import GRID_FILE, distill

    rounds = check_int("--rounds", args.rounds, 1)
    steps = check_int("--steps", args.steps, 2)
    if steps % (2**rounds):
        raise CLIError(f"--steps {steps} must be divisible by 2**--rounds = {2**rounds} (each round halves the steps)")
    check_int("--train-steps", args.train_steps, 1)
    check_int("--batch-size", args.batch_size, 1)
    check_int("--checkpoint-every", args.checkpoint_every, 0)
    lr = check_real("--lr", args.lr)
    if not lr > 0:
        raise CLIError(f"--lr must be positive, got {args.lr!r}")
    ema = check_real("--ema-decay", args.ema_decay)
    if not 0 <= ema < 1:
        raise CLIError(f"--ema-decay must lie in [0, 1), got {args.ema_decay!r}")
    check_seed("--seed", args.seed)
    check_sde_option(args.sde)
    guidance = None
    if args.guidance is not None:
        lo, hi = (check_real(f"--guidance {name}", v) for name, v in zip(("W_MIN", "W_MAX"), args.guidance, strict=True))
        if not lo < hi:
            raise CLIError(f"--guidance needs W_MIN < W_MAX, got {lo:g} {hi:g}")
        guidance = (lo, hi)
    if args.guidance_steps is not None:
        if guidance is None:
            raise CLIError("--guidance-steps is the guidance stage's length: give --guidance W_MIN W_MAX")
        check_int("--guidance-steps", args.guidance_steps, 1)
    out = check_writable_dir(args.out, "--out")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    run = load_cli_run(args.checkpoint, device, args.sde)
    if guidance is not None and getattr(run.model, "num_classes", None) is None:
        raise CLIError(f"--guidance needs a class-conditional run (trained with labels); {args.checkpoint} is "
                       f"unconditional")
    if not isinstance(run.sde, LinearSDEBase):
        raise CLIError(f"distillation needs a linear SDE (DDIM and the target use its marginals); this run's SDE is "
                       f"{run.sde!r}")
    spec = data_spec_for(run, args.data, f"--checkpoint {args.checkpoint!r}")
    check_data_file(args.data, "--data")
    data = build_data(spec, "train", "--data")
    if tuple(data[0].shape) != run.data_shape:
        raise CLIError(f"--data {spec['name']!r} has samples of shape {tuple(data[0].shape)}, but the model was "
                       f"trained on shape {run.data_shape}")
    meta = {**run.metadata, "distilled_from": str(args.checkpoint)}
    if "cli" in meta:  # the data the student was distilled on, for `scoresde compare/likelihood --checkpoint`
        meta["cli"] = {**meta["cli"], "data": spec}
    print(f"distilling {args.checkpoint} ({run.weights} weights, step {run.step}): DDIM {steps} -> "
          f"{steps // 2**rounds} steps in {rounds} round(s) of {args.train_steps} steps; writing to {out}")
    res = distill(run.model, run.sde, data, steps=steps, rounds=rounds, out_dir=out, train_steps=args.train_steps,
                  device=device, metadata=meta, batch_size=args.batch_size, lr=lr, ema_decay=ema,
                  checkpoint_every=args.checkpoint_every, seed=args.seed, progress=show_progress(args),
                  guidance=guidance, guidance_steps=args.guidance_steps, grid=args.grid)
    for r in res.rounds:
        how = f"{r.seconds:.1f} s" if r.seconds else f"finished before (resumed at step {r.resumed_from})"
        print(f"round {r.round}: {r.teacher_steps} -> {r.student_steps} steps, {r.train_steps} optimiser steps, "
              f"{how}, final loss {r.final_loss:.4g} -> {r.path}")
    last = res.rounds[-1].path
    how = "" if guidance is None else f" --label K --guidance W (W in [{guidance[0]:g}, {guidance[1]:g}])"
    print(f"sample the {len(res.grid) - 1}-step student with: scoresde sample --checkpoint {last} --sampler ddim "
          f"--grid {last / GRID_FILE}{how}")
    return 0
