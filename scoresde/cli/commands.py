"""``scoresde train | sample | likelihood | compare``: one function per sub-command."""

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
from ..data import ImageData, MixtureDataset
from ..likelihood import log_likelihood, nll_bound
from ..sampling import sample
from ..sde import VPSDE, LinearSDE
from ..training import DSMLoss, SlicedScoreMatchingLoss, TrainConfig, Trainer
from ..training.distributed import shutdown
from .common import (
    CLIError,
    atomic_file,
    build_data,
    build_model,
    build_sde,
    check_output_file,
    check_writable_dir,
    load_config,
    load_model,
    parse_int_list,
    resolve_device,
    resolve_sampler,
    score_fn_for,
)
from .comparison import noise_floor, plot_comparison, run_comparison, write_csv

ANALYTIC = {"ring": analytic.ring_mixture, "random16": lambda: analytic.random_mixture(16, 8, seed=0)}


def _seed_and_device(args) -> torch.device:
    torch.manual_seed(args.seed)
    return resolve_device(args.device)


# ---- train -----------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.seed is not None:
        cfg["seed"] = cfg["train"]["seed"] = args.seed
    if args.device is not None:
        cfg["device"] = args.device
    if args.out is not None:
        cfg["out"] = args.out
    train_keys = {f for f in TrainConfig.__dataclass_fields__}
    try:
        TrainConfig(**{k: (tuple(v) if k == "betas" else v) for k, v in cfg["train"].items() if k in train_keys}).validate()
    except (TypeError, ValueError) as err:
        raise CLIError(f"bad train config: {err}") from None
    # under torchrun with no device given, the Trainer puts each rank on cuda:LOCAL_RANK (or cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = None if launched and cfg["device"] is None else resolve_device(cfg["device"])
    out = check_writable_dir(cfg["out"])
    torch.manual_seed(int(cfg["seed"]))
    sde = build_sde(cfg["sde"])
    data = build_data(cfg["data"], "train")
    shape = tuple(data[0].shape)
    model = build_model(cfg, sde, shape)
    if isinstance(sde, LinearSDE):
        loss = DSMLoss(sde, cfg["loss"]["weighting"])
    else:  # no closed-form kernel: sliced score matching on simulated x_t
        loss = SlicedScoreMatchingLoss(sde)
    trainer = Trainer(model, loss, data, out, device=device, **{**cfg["train"], "betas": tuple(cfg["train"]["betas"])})
    try:
        start = trainer.resume() if args.resume else 0
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
def _sampler_options(items: list[str]) -> dict:
    import yaml

    opts = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--option must look like name=value (e.g. snr=0.1), got {item!r}")
        k, _, v = item.partition("=")
        opts[k.strip()] = yaml.safe_load(v)
    return opts


def sample_cmd(args: argparse.Namespace) -> int:
    sampler = resolve_sampler(args.sampler)
    device = _seed_and_device(args)
    out = check_output_file(args.out)
    plot = check_output_file(args.plot) if args.plot else None
    loaded = load_model(args.checkpoint, device, args.sde)
    shape = (args.n, *loaded.model.config["data_shape"])
    start = time.perf_counter()
    res = sample(score_fn_for(loaded.model), loaded.sde, shape, sampler=sampler, steps=args.steps, seed=args.seed,
                 device=device, progress=True, **_sampler_options(args.option))
    seconds = time.perf_counter() - start
    x = res.x.detach().cpu()
    with atomic_file(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=x.numpy(), nfe=res.nfe, sampler=sampler, seconds=seconds)
    if plot is not None:
        with atomic_file(plot) as tmp:
            _plot_samples(x, loaded.config, tmp, f"{sampler}, {res.nfe} NFE")
    print(f"{args.n} samples with {sampler} ({res.nfe} score evaluations, {seconds:.1f} s) -> {out}"
          + (f"; plot -> {plot}" if plot else ""))
    return 0


def _plot_samples(x: torch.Tensor, cfg: dict, path: Path, title: str) -> None:
    from ..viz import image_grid, save_figure, scatter_panels

    if x.dim() == 4:
        fig = image_grid(x[:64], title=title)
    elif x.dim() == 2 and x.shape[1] == 2:
        density = None
        if cfg["data"]["name"] == "ring":  # contours of the true density under the points
            gmm = analytic.ring_mixture()
            density = lambda p: gmm.log_prob(p, 0.0, VPSDE())  # noqa: E731  (t = 0: any linear SDE)
        fig = scatter_panels({title: x}, density=density)
    else:
        raise CLIError(f"--plot draws 2-D points or images; these samples have shape {tuple(x.shape[1:])}")
    save_figure(fig, path)


# ---- likelihood ------------------------------------------------------------------------------
def likelihood_cmd(args: argparse.Namespace) -> int:
    device = _seed_and_device(args)
    loaded = load_model(args.checkpoint, device, args.sde)
    spec = dict(loaded.config["data"])
    if args.data is not None:
        spec["name"] = args.data
    data = build_data(spec, "test")
    n = min(args.n, len(data)) if args.n else len(data)
    gen = torch.Generator().manual_seed(args.seed)
    if isinstance(data, ImageData):
        x = data.train_batch(torch.arange(n), gen)  # dequantised with fresh uniform noise
    else:
        x = torch.stack([data[i] for i in range(n)])
    dtype = torch.float64 if x[0].numel() <= 64 else torch.float32
    model = loaded.model.to(dtype)
    x = x.to(device=device, dtype=dtype)
    start = time.perf_counter()
    res = log_likelihood(model, loaded.sde, x,  # differentiated through: no no_grad here
                         trace=args.trace, rtol=args.rtol, atol=args.atol, generator=torch.Generator(device).manual_seed(args.seed),
                         chunk_size=args.chunk_size, progress=True)
    seconds = time.perf_counter() - start
    nll = float(-res.log_p.mean())
    se = float(res.log_p.std() / math.sqrt(n)) if n > 1 else float("nan")
    out = {"n": n, "trace": args.trace, "nll_nats": nll, "stderr": se, "nfe": res.nfe, "seconds": seconds}
    print(f"{n} points of {spec['name']!r}, trace={args.trace}: NLL {nll:.4f} +- {se:.4f} nats per point "
          f"({res.nfe} function evaluations, {seconds:.1f} s)")
    log_p_bound = None
    if args.sde_bound:
        try:
            with torch.no_grad():
                bound = nll_bound(model, loaded.sde, x, samples=args.sde_bound, chunk_size=max(1, 8192 // n),
                                  generator=torch.Generator(device).manual_seed(args.seed))
        except ValueError as err:
            raise CLIError(f"--sde-bound: {err}") from None
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
    if args.json:
        path = check_output_file(args.json)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(out, indent=2))
    return 0


# ---- compare ---------------------------------------------------------------------------------
def compare_cmd(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.analytic is None):
        raise CLIError("give exactly one of --checkpoint (a trained model) or --analytic NAME (an exact score)")
    samplers = [resolve_sampler(s.strip()) for s in args.samplers.split(",") if s.strip()]
    nfes = parse_int_list(args.nfe, "--nfe")
    device = _seed_and_device(args)
    out = check_writable_dir(args.out)
    score_fns = {}
    if args.checkpoint is not None:
        loaded = load_model(args.checkpoint, device, args.sde)
        sde, name = loaded.sde, loaded.config["data"]["name"]
        score_fns["model"] = score_fn_for(loaded.model)
        gmm = analytic.ring_mixture() if name == "ring" else None
    else:
        if args.analytic not in ANALYTIC:
            raise CLIError(f"unknown --analytic {args.analytic!r}; valid: {', '.join(ANALYTIC)}")
        gmm = ANALYTIC[args.analytic]()
        sde = build_sde({"name": args.sde}) if args.sde else build_sde({"name": "vp", "beta_min": 0.1, "beta_max": 20.0})
        name = args.analytic
    if gmm is not None:
        if not isinstance(sde, LinearSDE):
            raise CLIError(f"the exact mixture score needs a LinearSDE, got {type(sde).__name__}")
        score_fns["exact"] = gmm.to(device=device, dtype=torch.float32).score_fn(sde)
        reference = gmm.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 7))
        floor = noise_floor(reference, gmm.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 8)))
        shape = (args.n, gmm.dim)
    else:
        data = build_data(loaded.config["data"], "test")
        reference = torch.stack([data[i] for i in range(min(args.n, len(data)))])
        floor = None
        shape = (args.n, *loaded.model.config["data_shape"])
    rows = run_comparison(score_fns, sde, shape, samplers, nfes, reference, gmm=gmm, seed=args.seed, device=device)
    csv_path, png_path = out / "compare.csv", out / "compare.png"
    with atomic_file(csv_path) as tmp:
        write_csv(rows, tmp)
    with atomic_file(png_path) as tmp:
        plot_comparison(rows, tmp, floor=floor, title=f"{name}: " + ("solid = model score, dashed = exact score"
                                                                      if len(score_fns) > 1 else "quality and time vs NFE"))
    width = max(len(s) for s in samplers)
    print(f"{'score':<6} {'sampler':<{width}} {'nfe':>5} {'sliced_w2':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['score']:<6} {r['sampler']:<{width}} {r['nfe']:>5} {r['sliced_w2']:>10.4f} {r['seconds']:>8.2f}")
    if floor is not None:
        print(f"noise floor (two exact draws of {args.n}): sliced W2 {floor:.4f}")
    print(f"wrote {csv_path} and {png_path}")
    return 0

