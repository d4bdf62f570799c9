r"""``scoresde demo``: train, sample and measure a score model on a density we know exactly.

The data are the 2-D ring mixture (8 Gaussians on a circle with unequal weights,
:func:`scoresde.analytic.ring_mixture`), whose :math:`\log p_0` and score under the VP SDE are
closed form. The demo

1. trains a small MLP score model by denoising score matching (a few thousand AdamW steps);
2. samples it with the reverse SDE (Euler-Maruyama) and the probability-flow ODE (dopri5);
3. computes the exact log-likelihood of held-out data through the PF-ODE (exact Jacobian trace)
   next to the true :math:`-\log p_0` of the mixture, and next to the PF-ODE likelihood of the
   *exact* score (which isolates the solver's and the prior's error from the model's);
4. compares samplers at equal numbers of score evaluations, with the model's and the exact score,
   over several seeds, against a noise floor drawn from several pairs of exact sample sets;
5. writes report.md and PNGs into a fresh folder (written under a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .. import __version__, analytic, metrics
from .._files import atomic_dir
from ..data import MixtureDataset
from ..errors import check_seed
from ..likelihood import log_likelihood, nll_bound
from ..sampling import sample
from ..sde import VPSDE
from ..training import DSMLoss, Trainer
from ..viz import scatter_panels, trajectory_panels
from .common import (
    DEFAULTS,
    CLIError,
    build_model,
    check_writable_dir,
    cli_metadata,
    merge,
    resolve_device,
    score_fn_for,
    show_progress,
)
from .comparison import (
    better,
    noise_floor,
    noise_floor_band,
    plot_comparison,
    quality,
    run_comparison,
    summarise,
    write_csv,
)

# A recipe that gets within a few hundredths of a nat of the true NLL in under a minute on 2 cores.
RECIPE = {
    "model": {"net": "mlp", "hidden": 128, "depth": 3, "data_std": 4.0},
    "train": {"steps": 3000, "batch_size": 512, "lr": 2e-3, "warmup_steps": 200, "lr_schedule": "cosine",
              "min_lr_ratio": 0.05, "ema_decay": 0.999, "log_every": 50, "checkpoint_every": 0,
              "keep_checkpoints": 1, "tensorboard": False},
}
BUDGETS = {  # (train steps, samples, held-out points, NFE budgets, Euler-Maruyama steps)
    "full": (3000, 2000, 500, [10, 20, 50, 100], 500),
    "quick": (100, 200, 16, [10, 20], 50),
}
# the sampler comparison: (seeds, samples per seed, pairs of exact draws for the noise floor). Several
# seeds of fewer samples rather than one of many: one draw's ranking above ~20 NFE is noise.
COMPARE = {"full": (4, 1000, 8), "quick": (2, 100, 3)}
SAMPLERS = ["euler_maruyama", "pc", "heun", "dpm_solver", "ode"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="scoresde-demo", help="report folder to write (default ./scoresde-demo; "
                   "replaced as a whole when the demo finishes, untouched if it fails)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, training and sampling (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full",
                   help="'full' (about a minute on 2 CPU cores) or 'quick' (a few seconds; a smoke test)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1: this small network gains little from more, and one "
                        "thread does not fight other processes for the cores)")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def run(args: argparse.Namespace) -> int:
    threads = args.threads or 1
    seed = check_seed("--seed", args.seed)
    device = resolve_device(args.device)
    out = Path(args.out)
    check_writable_dir(out.parent if str(out.parent) else ".", "the folder of --out")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a folder")
    torch.set_num_threads(threads)
    progress = show_progress(args)
    steps, n, n_test, nfes, em_steps = BUDGETS[args.budget]
    started = time.perf_counter()
    timings: dict[str, float] = {}
    print(f"scoresde {__version__} demo: score model on the 2-D ring mixture (exact density known); "
          f"device {device}, {threads} threads, budget {args.budget!r}")

    with atomic_dir(out) as tmp:
        # ---- 1. train --------------------------------------------------------------------------
        sde = VPSDE()
        gmm = analytic.ring_mixture()
        cfg = merge(DEFAULTS, {**RECIPE, "seed": seed, "out": str(out / "run"),
                               "data": {"name": "ring", "n": 20_000, "seed": seed + 1}})
        cfg["train"] = {**cfg["train"], "steps": steps, "seed": seed, "progress": progress}
        data = MixtureDataset(gmm, 20_000, seed=seed + 1)
        held_out = MixtureDataset(gmm, n_test, seed=seed + 1000, dtype=torch.float64)
        torch.manual_seed(seed)
        model = build_model(cfg, sde, (2,))
        t0 = time.perf_counter()
        print(f"[1/4] training MLP(2, {RECIPE['model']['hidden']}, {RECIPE['model']['depth']}) by denoising "
              f"score matching, {steps} steps of {cfg['train']['batch_size']}")
        trainer = Trainer(model, DSMLoss(sde), data, tmp / "run", device=device, metadata=cli_metadata(cfg, "vp"),
                          **cfg["train"])
        trainer.fit()
        timings["train"] = time.perf_counter() - t0
        net = trainer.ema.model.eval().requires_grad_(False)
        model_fn = score_fn_for(net)
        exact_fn = gmm.to(device=device, dtype=torch.float32).score_fn(sde)

        # ---- 2. sample -------------------------------------------------------------------------
        t0 = time.perf_counter()
        print(f"[2/4] sampling {n} points with the reverse SDE (Euler-Maruyama, {em_steps} steps) and the PF-ODE (dopri5)")
        sde_res = sample(model_fn, sde, (n, 2), sampler="euler_maruyama", steps=em_steps, seed=seed + 1, device=device,
                         return_trajectory=True, progress=progress)
        ode_res = sample(model_fn, sde, (n, 2), sampler="ode", steps=100, seed=seed + 1, device=device,
                         return_trajectory=True, rtol=1e-4, atol=1e-4)
        exact_res = sample(exact_fn, sde, (n, 2), sampler="euler_maruyama", steps=em_steps, seed=seed + 1, device=device)
        timings["sample"] = time.perf_counter() - t0
        reference = gmm.sample(n, generator=torch.Generator().manual_seed(seed + 7))
        other = gmm.sample(n, generator=torch.Generator().manual_seed(seed + 8))
        floor = noise_floor(reference, other)
        sample_rows = []
        for label, res in [(f"model score, reverse SDE (EM {em_steps})", sde_res), ("model score, PF-ODE (dopri5)", ode_res),
                           (f"exact score, reverse SDE (EM {em_steps})", exact_res)]:
            x = res.x.detach().cpu().double()
            q = quality(x, reference, gmm)
            sample_rows.append([label, res.nfe, f"{q['sliced_w2']:.3f}", f"{q['mode_tv']:.3f}",
                                f"{q['dispersion']:.2f}", f"{float(metrics.nll(x, gmm)):.3f}"])
        sample_rows.append(["exact samples (another draw)", "-", f"{floor:.3f}",
                            f"{float(metrics.mode_weight_tv(other, gmm)):.3f}",
                            f"{float(metrics.dispersion(other, gmm)):.2f}", f"{float(metrics.nll(other, gmm)):.3f}"])

        # ---- 3. likelihood ---------------------------------------------------------------------
        t0 = time.perf_counter()
        print(f"[3/4] exact log-likelihood of {n_test} held-out points through the PF-ODE (exact trace)")
        x_test = held_out.data.to(device)
        net64 = net.double()
        ll_model = log_likelihood(net64, sde, x_test, trace="exact", rtol=1e-5, atol=1e-5,
                                  progress=progress)
        gmm64 = gmm.to(device=device)
        ll_exact = log_likelihood(gmm64.score_fn(sde), sde, x_test, trace="exact", rtol=1e-6, atol=1e-6,
                                  prior_log_prob=gmm64.prior_log_prob(sde))
        with torch.no_grad():  # the reverse-SDE model of the same network: its variational bound
            bound = nll_bound(net64, sde, x_test, samples=256, generator=torch.Generator(device).manual_seed(seed + 3))
        net.float()
        true_nll = float(held_out.nll())
        model_nll = float(-ll_model.log_p.mean())
        sde_bound_nll = float(bound.nll.mean())
        exact_nll = float(-ll_exact.log_p.mean())
        stderr = float(held_out.log_prob(held_out.data).std() / n_test**0.5)
        timings["likelihood"] = time.perf_counter() - t0

        # ---- 4. samplers at equal cost ---------------------------------------------------------
        t0 = time.perf_counter()
        print(f"[4/4] comparing samplers {', '.join(SAMPLERS)} at NFE {nfes} with the model and the exact score")
        n_seeds, n_cmp, pairs = COMPARE[args.budget]
        cmp_seeds = [seed + 2 + 100 * k for k in range(n_seeds)]
        refs = [gmm.sample(n_cmp, generator=torch.Generator().manual_seed(s + 7)) for s in cmp_seeds]
        rows = run_comparison({"model": model_fn, "exact": exact_fn}, sde, (n_cmp, 2), SAMPLERS, nfes, refs,
                              gmm=gmm, seeds=cmp_seeds, device=device, progress=progress)
        band = noise_floor_band(gmm, n_cmp, pairs=pairs, seed=seed + 50)
        summ = summarise(rows)
        timings["compare"] = time.perf_counter() - t0

        # ---- report ----------------------------------------------------------------------------
        density = lambda x: gmm.log_prob(x.to(torch.float64), 0.0, sde)  # noqa: E731
        lim = (-6.5, 6.5)
        scatter_panels({"data (exact samples)": reference, f"reverse SDE (EM, {em_steps} steps)": sde_res.x,
                        f"PF-ODE (dopri5, {ode_res.nfe} NFE)": ode_res.x}, density=density, limits=lim,
                       path=tmp / "samples.png")
        trajectory_panels({"reverse SDE": (sde_res.trajectory.times[::5], sde_res.trajectory.states[::5]),
                           "PF-ODE": (ode_res.trajectory.times, ode_res.trajectory.states)},
                          n_paths=24, path=tmp / "trajectories.png")
        write_csv(rows, tmp / "compare.csv")
        plot_comparison(rows, tmp / "compare.png", floor=band,
                        title=f"ring mixture: samplers at equal cost, {n_seeds} seeds of {n_cmp} samples")
        total = time.perf_counter() - started
        summary = {
            "true_nll": true_nll, "model_nll": model_nll, "exact_score_nll": exact_nll, "stderr": stderr,
            "nll_gap": model_nll - true_nll, "sde_bound_nll": sde_bound_nll, "likelihood_nfe": ll_model.nfe, "train_steps": steps,
            "timings_s": timings, "total_s": total, "device": str(device), "threads": threads, "seed": seed,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        nll_rows = [["true -log p_0 of the mixture", f"{true_nll:.4f}", "-"],
                    ["PF-ODE, trained model", f"{model_nll:.4f}", f"{model_nll - true_nll:+.4f}"],
                    ["reverse SDE, trained model (upper bound)", f"{sde_bound_nll:.4f}",
                     f"{sde_bound_nll - true_nll:+.4f}"],
                    ["PF-ODE, exact score + exact p_T", f"{exact_nll:.4f}", f"{exact_nll - true_nll:+.4f}"]]
        nll_table = _table(nll_rows, ["held-out NLL (nats/point)", "value", "minus true"])
        sample_table = _table(sample_rows, ["samples", "NFE", "sliced W2", "mode TV", "dispersion", "NLL under p_0"])
        best = _best_rows(summ)
        verdicts = _verdicts(summ, band)
        (tmp / "report.md").write_text(_report(summary, nll_table, sample_table, best, floor, n, n_test, nfes,
                                               (n_seeds, n_cmp, pairs), band, summ, verdicts))

    print()
    print(nll_table)
    print(f"(held-out n={n_test}; standard error of the true NLL's mean {stderr:.3f} nats)\n")
    print(sample_table)
    print()
    print(_table(best, BEST_HEADER))
    print("\n".join(verdicts))
    print(f"\nwrote {out}/report.md, samples.png, trajectories.png, compare.png, compare.csv and the trained run "
          f"in {out}/run ({total:.0f} s in all)")
    return 0


BEST_HEADER = ["sampler", "score", "NFE", "sliced W2 (+-s.e.)", "|disp - 1|", "mode TV", "seconds"]


def _best_rows(summ: list[dict]) -> list[list[str]]:
    """The comparison (means over seeds) at the smallest and largest budgets."""
    budgets = sorted({r["nfe_budget"] for r in summ})
    keep = [r for r in summ if r["nfe_budget"] in (budgets[0], budgets[-1])]
    return [[r["sampler"], r["score"], r["nfe"], f"{r['sliced_w2']:.3f} +- {r['sliced_w2_se']:.3f}",
             f"{r['dispersion_error']:.3f}", f"{r['mode_tv']:.3f}", f"{r['seconds']:.2f}"] for r in keep]


def _verdicts(summ: list[dict], band: dict) -> list[str]:
    """Sentences on which sampler is better, per score, measure and the extreme budgets. A sampler
    is called better than another only when :func:`~scoresde.cli.comparison.better` says so (its
    mean + 2 s.e. over the seeds below the other's mean - 2 s.e.), and "at the noise floor" when
    its mean - 2 s.e. reaches the top of the band of exact draws; the rest is indistinguishable."""
    budgets = sorted({r["nfe_budget"] for r in summ})
    out = []
    for metric, name in [("sliced_w2", "sliced W2"), ("dispersion_error", "|dispersion - 1|")]:
        top = max(band[metric])
        for score in dict.fromkeys(r["score"] for r in summ):
            for budget in dict.fromkeys([budgets[0], budgets[-1]]):
                group = sorted((r for r in summ if r["score"] == score and r["nfe_budget"] == budget),
                               key=lambda r: r[metric])
                lead = group[0]
                worse = [r["sampler"] for r in group[1:] if better(lead, r, metric)]
                tied = [r["sampler"] for r in group[1:] if not better(lead, r, metric)]
                floor = [r["sampler"] for r in group if r[metric] - 2 * r[f"{metric}_se"] <= top]
                text = f"- {name}, {score} score, NFE {budget}: lowest {lead['sampler']} ({lead[metric]:.3f})"
                text += f"; clearly better than {', '.join(worse)}" if worse else "; better than none beyond the noise"
                if tied:
                    text += f"; indistinguishable from {', '.join(tied)}"
                text += f"; at the noise floor: {', '.join(floor) if floor else 'none'}."
                out.append(text)
    return out


def _report(s: dict, nll_table: str, sample_table: str, best: list, floor: float, n: int, n_test: int, nfes,
            cmp: tuple, band: dict, summ: list[dict], verdicts: list[str]) -> str:
    t = s["timings_s"]
    n_seeds, n_cmp, pairs = cmp
    fl, fd = sorted(band["sliced_w2"]), sorted(band["dispersion_error"])
    ses = sorted(r["sliced_w2_se"] for r in summ)
    se_mid = ses[len(ses) // 2]
    return f"""# scoresde demo report

Score model trained on the 2-D ring mixture (8 Gaussians of std 0.3 on a circle of radius 4,
weights proportional to 1..8), whose density is known exactly. VP SDE (beta 0.1 to 20), MLP
score network with the eps parameterisation, {s['train_steps']} AdamW steps; seed {s['seed']},
device {s['device']} ({s['threads']} threads). Total time {s['total_s']:.0f} s (training {t['train']:.0f} s,
sampling {t['sample']:.0f} s, likelihood {t['likelihood']:.0f} s, sampler comparison {t['compare']:.0f} s).

## Exact likelihood of held-out data

{n_test} held-out points. The PF-ODE log-likelihood uses the exact Jacobian trace (dopri5,
rtol = atol = 1e-5, {s['likelihood_nfe']} function evaluations). The row with the exact score and the
exact p_T measures the solver alone; the trained model's gap to the true NLL is its modelling
error. Standard error of the true NLL's mean: {s['stderr']:.3f} nats (both numbers are on the
same points, so their difference is far more precise than that). The reverse-SDE row is the
variational upper bound on the NLL of the SDE model built from the same network (`nll_bound`, 256
draws per point, the N(0, I) prior): the sampler that Euler-Maruyama approximates has this
likelihood, not the PF-ODE's. Its excess over the truth is the g^2-weighted score error, which
sigma^2-weighted training (this demo's) leaves large at small t; `weighting: likelihood` shrinks it.

{nll_table}

## Samples ({n} points)

Sliced W2 to exact samples (a second exact draw gives the noise floor), total variation of mode
occupancy against the weights, dispersion inside modes (1 for exact samples), mean NLL of the
samples under the true density.

{sample_table}

![samples vs data](samples.png)

Grey contours: the true log-density. Left: exact samples; middle: reverse SDE; right: PF-ODE.

![trajectories](trajectories.png)

Paths of 24 samples from the prior (grey) to the data (red): the reverse SDE's are rough
(Brownian), the PF-ODE's are smooth and deterministic.

## Samplers at equal cost

Each sampler at NFE budgets {list(nfes)} (it takes the most steps whose evaluations fit), run with
{n_seeds} sampling seeds of {n_cmp} samples each, every seed against its own exact reference draw:
fewer samples per run than above, so that several seeds fit in the demo's time. Top row of the
plot: the trained model's score; bottom row: the exact score of the mixture, whose curves show
discretisation error alone (the gap between the rows is the model's error). Columns: sliced W2
to exact samples, and the two sharper measures, the in-mode spread error |dispersion - 1| and
the total variation of the mode weights. Each line is the mean over the seeds, its band +-2
standard errors; the grey band spans the same numbers for {pairs} pairs of independent exact draws
of {n_cmp}, the noise floor: a perfect sampler lands inside it.

How large the noise is: the floor's sliced W2 spans {fl[0]:.3f} to {fl[-1]:.3f} over the {pairs} pairs
(a single pair could give any value in that range), and the median standard error of a sampler's
mean sliced W2 over {n_seeds} seeds is {se_mid:.3f}; differences smaller than a few times that are
noise, so at {n_cmp} samples sliced W2 separates only the worst runs. |dispersion - 1| is far
sharper (exact draws give {fd[0]:.3f} to {fd[-1]:.3f}): it sees the in-mode spread that a coarse
step gets wrong. The statements below are generated by the demo's code, which calls a sampler
better than another only when its mean + 2 s.e. lies below the other's mean - 2 s.e., and "at
the noise floor" when its mean - 2 s.e. reaches the top of the exact draws' band:

{chr(10).join(verdicts)}

![quality against NFE, model and exact score](compare.png)

Means over the seeds at the smallest and largest budgets (all rows, one per seed, in compare.csv):

{_table(best, BEST_HEADER)}

## Next steps

The trained run is in `run/` (config.json, metrics.csv, checkpoints). Try
`scoresde sample --checkpoint run --sampler pc --steps 500 --n 2000 --out samples.npz --plot samples.png`,
`scoresde likelihood --checkpoint run --data ring`, or
`scoresde compare --checkpoint run --samplers em,heun,dpm_solver --nfe 10,20,50`.
"""
