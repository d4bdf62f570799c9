"""Likelihood weighting (g^2, importance-sampled t) against sigma^2 weighting: held-out NLL gap.

For each problem and seed, two MLPs are trained with the same initial weights, data, batch
order and step budget, differing only in the DSM weighting. Each network defines two models,
and both are scored on the same held-out points against the mixture's exact density,

    gap = model NLL - true NLL   (nats per point; 0 is perfect),

with the exact p_T as prior (so only the learned score and the solver contribute):

* the PF-ODE model: ``ss.log_likelihood`` with the exact trace;
* the reverse-SDE model: its variational upper bound ``ss.nll_bound`` (256 draws per point,
  the same draws for both weightings), whose excess is the g^2-weighted score error that the
  likelihood weighting minimises.

The paired difference  gap(likelihood) - gap(sigma2)  is computed point by point, so its
standard error excludes the held-out sample's own spread; a negative value means the
likelihood weighting closed more of the gap.

    python benchmarks/weighting.py --problems ring:0.3 ring:0.05 --seeds 0 1 2 [--steps 4000]
    python benchmarks/weighting.py --summary        # rebuild the table from the CSV
    python benchmarks/weighting.py --by-time --problems ring:0.3 --seeds 0   # where the error sits

Problems: ``ring:STD`` is the 8-component 2-D ring mixture (radius 4, weights k+1) with
component std STD; ``mix:DIM`` is ``random_mixture(DIM)``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scoresde as ss  # noqa: E402

CSV = Path(__file__).parent / "results" / "weighting.csv"
FIELDS = ["problem", "seed", "steps", "grad_clip", "weighting", "n_test", "true_nll",
          "gap", "gap_se", "paired_diff", "paired_se",
          "bound_gap", "bound_gap_se", "bound_paired_diff", "bound_paired_se", "train_s"]


def make_problem(spec: str):
    """``(gmm, data_std, make_net)`` for a problem spec; the net is built by the caller after seeding."""
    kind, _, arg = spec.partition(":")
    if kind == "ring":
        return ss.analytic.ring_mixture(std=float(arg)), 4.0, lambda: ss.MLP(2, 128, 3)
    if kind == "mix":
        dim = int(arg)
        gmm = ss.analytic.random_mixture(dim)
        return gmm, float(gmm.covariance().diagonal().mean().sqrt()), lambda: ss.MLP(dim, 256, 3)
    raise SystemExit(f"problem must be ring:STD or mix:DIM, got {spec!r}")


def train(spec: str, weighting: str, seed: int, steps: int, grad_clip: float | None = 1.0):
    """The test recipe of tests/training/conftest.py, with ``steps`` and ``seed`` varied."""
    sde = ss.VPSDE()
    gmm, data_std, make_net = make_problem(spec)
    data = ss.MixtureDataset(gmm, 20_000, seed=1 + 1000 * seed)
    torch.manual_seed(seed)
    model = ss.ScoreModel(make_net(), sde, data_std=data_std)
    trainer = ss.Trainer(model, ss.DSMLoss(sde, weighting), data, None, steps=steps, batch_size=512, lr=2e-3,
                         warmup_steps=200, lr_schedule="cosine", min_lr_ratio=0.05, ema_decay=0.999,
                         seed=seed, grad_clip=grad_clip, progress=False)
    trainer.fit()
    return trainer.ema.model.double(), sde, gmm


def heldout_gaps(model, sde, gmm, n: int) -> tuple[Tensor, Tensor, float]:
    """Per-point gaps to the true NLL: the PF-ODE model's (exact) and the SDE model's bound.

    The bound's draws come from a fixed seed, so both weightings see the same times and noise.
    """
    test = ss.MixtureDataset(gmm, n, seed=999, dtype=torch.float64)
    prior = gmm.prior_log_prob(sde)
    ll = ss.log_likelihood(model, sde, test.data, trace="exact", prior_log_prob=prior)
    with torch.no_grad():
        bound = ss.nll_bound(model, sde, test.data, samples=256, prior_log_prob=prior,
                             generator=torch.Generator().manual_seed(4242))
    true = test.log_prob(test.data)
    return -ll.log_p + true, bound.nll + true, float(-true.mean())


def score_error_by_time(model, sde, gmm, n: int = 4000) -> dict:
    """1/2 int g^2 E_{p_t} |s_theta - s*|^2 dt (the bound's excess) split over time ranges, by
    the trapezoid rule on 60 log-spaced times in [1e-5, 1] with ``n`` exact draws of p_t each."""
    log_t = torch.linspace(math.log(1e-5), 0.0, 60, dtype=torch.float64)
    ts, exact, gen = log_t.exp(), gmm.score_fn(sde), torch.Generator().manual_seed(5)
    err = []
    for t in ts:
        x = gmm.sample(n, t=float(t), sde=sde, generator=gen)
        tt = torch.full((n,), float(t), dtype=torch.float64)
        with torch.no_grad():
            err.append(float((model(x, tt) - exact(x, tt)).square().sum(-1).mean()))
    f = 0.5 * sde.g(ts).square() * torch.tensor(err, dtype=torch.float64) * ts  # dt = t d(log t)
    out = {}
    for lo, hi in [(1e-5, 1e-3), (1e-3, 1e-2), (1e-2, 0.1), (0.1, 1.0), (1e-5, 1.0)]:
        m = (ts >= lo * (1 - 1e-9)) & (ts <= hi * (1 + 1e-9))
        out[f"{lo:g}-{hi:g}"] = round(float(torch.trapezoid(f[m], log_t[m])), 4)
    return out


def by_time(args):
    for spec in args.problems:
        for weighting in ("likelihood", "sigma2"):
            model, sde, gmm = train(spec, weighting, args.seeds[0], args.steps, args.grad_clip)
            print(f"{spec} seed {args.seeds[0]} {weighting}: {score_error_by_time(model, sde, gmm)}", flush=True)


def se(v: Tensor) -> float:
    """Standard error of the mean over held-out points."""
    return float(v.std()) / math.sqrt(len(v))


def run(args):
    args.csv.parent.mkdir(exist_ok=True)
    new = not args.csv.exists()
    with args.csv.open("a", newline="") as fh:
        out = csv.DictWriter(fh, FIELDS)
        if new:
            out.writeheader()
        for spec in args.problems:
            for seed in args.seeds:
                gaps, bounds, rows = {}, {}, {}
                for weighting in ("likelihood", "sigma2"):
                    t0 = time.perf_counter()
                    model, sde, gmm = train(spec, weighting, seed, args.steps, args.grad_clip)
                    train_s = time.perf_counter() - t0
                    gaps[weighting], bounds[weighting], true_nll = heldout_gaps(model, sde, gmm, args.n_test)
                    g, bg = gaps[weighting], bounds[weighting]
                    rows[weighting] = dict(problem=spec, seed=seed, steps=args.steps, grad_clip=args.grad_clip,
                                           weighting=weighting,
                                           n_test=args.n_test, true_nll=f"{true_nll:.4f}",
                                           gap=f"{float(g.mean()):+.4f}",
                                           gap_se=f"{se(g):.4f}",
                                           bound_gap=f"{float(bg.mean()):+.4f}", bound_gap_se=f"{se(bg):.4f}",
                                           train_s=f"{train_s:.0f}")
                d = gaps["likelihood"] - gaps["sigma2"]
                db = bounds["likelihood"] - bounds["sigma2"]
                for r in rows.values():
                    r.update(paired_diff=f"{float(d.mean()):+.4f}", paired_se=f"{se(d):.4f}",
                             bound_paired_diff=f"{float(db.mean()):+.4f}", bound_paired_se=f"{se(db):.4f}")
                    out.writerow(r)
                    print(r, flush=True)
                fh.flush()


def summary(path: Path):
    rows = list(csv.DictReader(path.open()))
    print("| problem | steps | seed | PF-ODE gap, likelihood | PF-ODE gap, sigma^2 | paired difference | "
          "SDE bound gap, likelihood | SDE bound gap, sigma^2 | paired difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict = {}
    for r in rows:
        if r["weighting"] != "likelihood":
            continue
        s2 = next(q for q in rows if q["weighting"] == "sigma2" and
                  (q["problem"], q["seed"], q["steps"]) == (r["problem"], r["seed"], r["steps"]))
        print(f"| {r['problem']} | {r['steps']} | {r['seed']} | {r['gap']} ({r['gap_se']}) | "
              f"{s2['gap']} ({s2['gap_se']}) | {r['paired_diff']} ({r['paired_se']}) | "
              f"{r['bound_gap']} ({r['bound_gap_se']}) | {s2['bound_gap']} ({s2['bound_gap_se']}) | "
              f"{r['bound_paired_diff']} ({r['bound_paired_se']}) |")
        groups.setdefault((r["problem"], r["steps"]), []).append(
            [float(v) for v in (r["gap"], s2["gap"], r["bound_gap"], s2["bound_gap"])])
    print("\n| problem | steps | seeds | PF-ODE gap: likelihood / sigma^2 | likelihood ahead | "
          "SDE bound gap: likelihood / sigma^2 | likelihood ahead |")
    print("|---|---|---|---|---|---|---|")
    for (problem, steps), v in groups.items():
        k = len(v)
        lw, s2, blw, bs2 = (sum(x[i] for x in v) / k for i in range(4))
        print(f"| {problem} | {steps} | {k} | {lw:+.4f} / {s2:+.4f} | {sum(x[0] < x[1] for x in v)} of {k} | "
              f"{blw:+.4f} / {bs2:+.4f} | {sum(x[2] < x[3] for x in v)} of {k} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["ring:0.3", "ring:0.05"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--grad-clip", type=lambda v: None if v == "none" else float(v), default=1.0)
    ap.add_argument("--csv", type=Path, default=CSV, help="results file (rows are appended)")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--by-time", action="store_true",
                    help="instead: the bound's excess 1/2 int g^2 E|s - s*|^2 dt by time range (first seed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.summary:
        summary(args.csv)
    elif args.by_time:
        by_time(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
