"""Fitted grids (``ss.sampling.optimize_grid``) against the default grid, on exact mixture scores.

Problems: ``ring`` (``ss.analytic.ring_mixture()``, 2-D) and ``mix16``
(``ss.analytic.random_mixture(16)``); SDEs ``ss.VPSDE()`` and ``ss.VESDE()``; samplers (default
``dpm_solver``, ``unipc`` and ``heun``, each with its default options) at the most steps within 5 and 10 score evaluations
(final denoising step included: 4 and 9 steps). For each, the grid is fitted once (calibration
seed 12345, other draws than the scored ones) and both grids draw ``--n`` samples (default 2000)
for each of ``--seeds`` (default 0 1 2), scored against exact samples of the mixture:

* dispersion error ``|dispersion(x) - dispersion(exact)|`` (``ss.metrics.dispersion``; the exact
  value from 20 000 exact samples),
* sliced W2 to an exact set of ``--n``, and the mode-weight TV (``ss.metrics.mode_weight_tv``),
  each next to its noise floor (another exact set of ``--n``).

Also the fit's cost: its single-sample score evaluations and their ratio to one 1000-sample run
at that budget (``relative_cost``), and its wall time.

Run: ``OMP_NUM_THREADS=1 python benchmarks/grid_fit.py`` (a few minutes on one core);
writes ``benchmarks/results/grid_fit.csv`` and prints a markdown table (also ``--summary``).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import platform
import statistics
import time

import torch

import scoresde as ss

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
PROBLEMS = {"ring": ss.analytic.ring_mixture, "mix16": lambda: ss.analytic.random_mixture(16)}
SDES = {"vp": ss.VPSDE, "ve": ss.VESDE}
FIT_SEED = 12_345


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    p.add_argument("--samplers", default="dpm_solver,unipc,heun")
    p.add_argument("--problems", default="ring,mix16")
    p.add_argument("--sdes", default="vp,ve")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--no-refine", action="store_true", help="the DP's grid alone")
    p.add_argument("--out", default=str(RESULTS / "grid_fit.csv"))
    p.add_argument("--summary", action="store_true", help="print the table from the CSV")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(list(csv.DictReader(open(args.out)))))
        return
    torch.set_num_threads(1)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    rows = []
    device = f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}"
    for pname in args.problems.split(","):
        gmm = PROBLEMS[pname]()
        ref_big = gmm.sample(20_000, generator=torch.Generator().manual_seed(1))
        d_exact = float(ss.metrics.dispersion(ref_big, gmm))
        refs = {s: gmm.sample(args.n, generator=torch.Generator().manual_seed(1000 + s)) for s in args.seeds}
        for sname in args.sdes.split(","):
            sde = SDES[sname]()
            score = gmm.to(dtype=dtype).score_fn(sde)
            for s in args.seeds:
                other = gmm.sample(args.n, generator=torch.Generator().manual_seed(2000 + s))
                rows.append(dict(problem=pname, sde=sname, sampler="exact", grid="floor", nfe_budget="", steps="",
                                 nfe="", seed=s, disp_err=abs(float(ss.metrics.dispersion(other, gmm)) - d_exact),
                                 sw=float(ss.metrics.sliced_wasserstein(other, refs[s])),
                                 mode_tv=float(ss.metrics.mode_weight_tv(other, gmm)), fit_s="", evaluations="",
                                 relative_cost="", times="", device=device))
            for name in args.samplers.split(","):
                smp = ss.sampling.get_sampler(name)
                for budget in args.nfe:
                    steps = ss.sampling.steps_for_nfe(smp, sde, budget)
                    t0 = time.perf_counter()
                    info = ss.sampling.optimize_grid(score, sde, (args.n, gmm.dim), steps, name, seed=FIT_SEED,
                                                     refine=not args.no_refine, return_info=True)
                    fit_s = time.perf_counter() - t0
                    for label, grid in (("default", None), ("fitted", info.times)):
                        for s in args.seeds:
                            res = ss.sample(score, sde, (args.n, gmm.dim), sampler=name, steps=steps, grid=grid,
                                            seed=s, dtype=dtype, check_every=0)
                            x = res.x.double()
                            ok = bool(torch.isfinite(x).all())
                            rows.append(dict(
                                problem=pname, sde=sname, sampler=name, grid=label, nfe_budget=budget, steps=steps,
                                nfe=res.nfe, seed=s,
                                disp_err=abs(float(ss.metrics.dispersion(x, gmm)) - d_exact) if ok else float("nan"),
                                sw=float(ss.metrics.sliced_wasserstein(x, refs[s])) if ok else float("nan"),
                                mode_tv=float(ss.metrics.mode_weight_tv(x, gmm)) if ok else float("nan"),
                                fit_s=round(fit_s, 2) if label == "fitted" else "",
                                evaluations=info.evaluations if label == "fitted" else "",
                                relative_cost=round(info.relative_cost, 2) if label == "fitted" else "",
                                times=" ".join(f"{t:.5g}" for t in (info.times if label == "fitted" else
                                                                     res.times.double()).tolist()),
                                device=device))
                    print(f"{pname} {sname} {name} {budget} NFE: fitted in {fit_s:.1f} s "
                          f"({info.relative_cost:.1f}x a 1000-sample run)", flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(summary([{k: str(v) for k, v in r.items()} for r in rows]))
    print(f"wrote {out}")


def summary(rows) -> str:
    """Markdown: per problem, SDE, sampler and budget, the mean over seeds of each grid's numbers."""
    def mean(rs, key):
        vals = [float(r[key]) for r in rs]
        return statistics.fmean(vals) if vals else float("nan")

    lines = ["| problem | SDE | sampler | NFE | disp. err default | disp. err fitted | SW2 default | SW2 fitted "
             "| SW2 floor | mode TV default | mode TV fitted | TV floor | fit cost (x 1000-sample run) |",
             "|" + "---|" * 13]
    keys = dict.fromkeys((r["problem"], r["sde"], r["sampler"], r["nfe_budget"]) for r in rows if r["grid"] != "floor")
    for pr, sd, sm, b in keys:
        sel = [r for r in rows if (r["problem"], r["sde"], r["sampler"], r["nfe_budget"]) == (pr, sd, sm, b)]
        d = [r for r in sel if r["grid"] == "default"]
        f = [r for r in sel if r["grid"] == "fitted"]
        fl = [r for r in rows if (r["problem"], r["sde"], r["grid"]) == (pr, sd, "floor")]
        lines.append(f"| {pr} | {sd} | {sm} | {b} | {mean(d, 'disp_err'):.3f} | {mean(f, 'disp_err'):.3f} | "
                     f"{mean(d, 'sw'):.3f} | {mean(f, 'sw'):.3f} | {mean(fl, 'sw'):.3f} | {mean(d, 'mode_tv'):.3f} | "
                     f"{mean(f, 'mode_tv'):.3f} | {mean(fl, 'mode_tv'):.3f} | {f[0]['relative_cost']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
