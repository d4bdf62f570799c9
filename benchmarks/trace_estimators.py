"""Trace estimators for the PF-ODE log-likelihood: per-point error against wall time.

For each estimator (``trace="hutchinson"`` with k probes, ``"hutch++"`` with k vector-Jacobian
products per evaluation, ``"exact"``) the mean absolute per-point error of ``log_p`` against the
exact-trace answer of the same model and solver settings (so the solver's own error cancels), and
the wall time of the whole solve, interleaved over the estimators and repeated:

* the exact score of a 64-D Gaussian mixture (8 components) under ``VPSDE()``, 128 points of it;
* a U-Net with random weights on 8x8 inputs (D = 64; every weight re-drawn at half the
  1/sqrt(fan-in) scale, including the zero-initialised output convolutions), as a score under
  ``VPSDE()``, 8 points of the digits data's shape, at rtol = atol = 1e-3 and one repeat: its
  flow is rough (about 460 evaluations at 1e-3, 2900 at 1e-5), and the exact trace costs 64
  vector-Jacobian products per evaluation.

Run: ``OMP_NUM_THREADS=1 python benchmarks/trace_estimators.py`` (about 15 min on one core). Writes
``results/trace_estimators.csv`` and ``results/trace_estimators.png``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scoresde as ss  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
ESTIMATORS = [("hutchinson", 1), ("hutchinson", 2), ("hutchinson", 4), ("hutchinson", 8), ("hutchinson", 16),
              ("hutch++", 3), ("hutch++", 6), ("hutch++", 12), ("hutch++", 24)]


def mixture_case():
    sde = ss.VPSDE()
    gmm = ss.analytic.random_mixture(64)
    x = gmm.sample(128, generator=torch.Generator().manual_seed(0), t=sde.eps, sde=sde).double()
    return "exact 64-D mixture", gmm.score_fn(sde), sde, x


def random_unet(sde, seed=0):
    """A float64 U-Net score on 8x8 single-channel inputs with every weight (the zero-initialised
    output convolutions included) drawn from N(0, (0.5/sqrt(fan-in))^2), seeded: an untrained but
    non-trivial network of a real model's shape."""
    torch.manual_seed(seed)
    net = ss.ScoreModel(ss.UNet(1, 8, base=16, channel_mults=(1, 2)), sde).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5 / p[0].numel() ** 0.5)
    return net


def unet_case():
    sde = ss.VPSDE()
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return "random-weight U-Net (8x8)", random_unet(sde), sde, x


def run(case, repeats, tol):
    name, score, sde, x = case
    kw = dict(rtol=tol, atol=tol)
    runs = [("exact", None)] + ESTIMATORS
    walls = {r: [] for r in runs}
    results = {}
    for rep in range(repeats):
        for trace, k in runs[rep % len(runs):] + runs[: rep % len(runs)]:
            if trace == "exact" and rep > 0:
                continue  # one exact solve is the reference (and its time)
            t0 = time.perf_counter()
            res = ss.log_likelihood(score, sde, x, trace=trace, probes=k or 1,
                                    generator=torch.Generator().manual_seed(100 + rep), **kw)
            walls[(trace, k)].append(time.perf_counter() - t0)
            results.setdefault((trace, k), []).append(res)
    ref = results[("exact", None)][0].log_p
    rows = []
    for (trace, k), rs in results.items():
        err = statistics.fmean(float((r.log_p - ref).abs().mean()) for r in rs)
        se = [float(r.standard_error.mean()) for r in rs if r.standard_error is not None]
        rows.append(dict(case=name, trace=trace, k=k or "", wall_s=round(statistics.median(walls[(trace, k)]), 3),
                         nfe=rs[0].nfe, mean_abs_err=round(err, 4), mean_se=round(statistics.fmean(se), 4) if se else ""))
        print(f"{name:28s} {trace:10s} k={k or '-':>3} wall {rows[-1]['wall_s']:7.2f} s  nfe {rows[-1]['nfe']:4d}  "
              f"mean |err| {err:.4f}  mean se {rows[-1]['mean_se']}", flush=True)
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, len(cases), figsize=(5.4 * len(cases), 4.9), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        mine = [r for r in rows if r["case"] == case]
        base = next(r for r in mine if r["trace"] == "hutchinson" and int(r["k"]) == 1)["wall_s"]
        for trace, style in (("hutchinson", "o-"), ("hutch++", "s--")):
            pts = sorted((r["wall_s"] / base, r["mean_abs_err"], int(r["k"])) for r in mine if r["trace"] == trace)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{trace} (k = {', '.join(str(p[2]) for p in pts)})")
        ex = next(r for r in mine if r["trace"] == "exact")
        ax.axvline(ex["wall_s"] / base, color="0.4", ls=":", label=f"exact trace: {ex['wall_s'] / base:.0f}x, error 0")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall time / one probe's")
        ax.set_ylabel("mean |log p error| per point (nats)")
        ax.set_title(case)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--plot", action="store_true", help="redraw the figure from the CSV")
    args = p.parse_args()
    if args.plot:
        with open(OUT / "trace_estimators.csv") as f:
            rows = [{**r, "wall_s": float(r["wall_s"]), "mean_abs_err": float(r["mean_abs_err"])} for r in csv.DictReader(f)]
        plot(rows, OUT / "trace_estimators.png")
        return
    torch.set_num_threads(1)
    print(f"trace_estimators: torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, float64, "
          f"rtol = atol = {args.tol:g}, {args.repeats} interleaved repeats", flush=True)
    rows = run(mixture_case(), args.repeats, args.tol) + run(unet_case(), 1, 1e-3)
    OUT.mkdir(exist_ok=True)
    with open(OUT / "trace_estimators.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, OUT / "trace_estimators.png")


if __name__ == "__main__":
    main()
