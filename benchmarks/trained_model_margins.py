"""The margin of every trained-model test, measured over training seeds.

A trained model's weights depend on float round-off: another CPU (another SIMD width, another
BLAS kernel) trains other weights, much like another seed. A test on a trained model must
therefore hold over seeds with a margin, not for the one run its author saw. This trains the
tests' ring-mixture recipe (tests/training/ring_recipe.py) with several seeds and both DSM
weightings, computes every quantity the trained-model tests bound, and prints, per quantity,
its range over seeds next to the test's bound.

    python benchmarks/trained_model_margins.py --seeds 0 1 2 3 4     # ~10 min per seed on one core
    python benchmarks/trained_model_margins.py --summary             # the table from the CSV

Rows go to benchmarks/results/trained_model_margins.csv (one per seed).
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "training")]
import ring_recipe as rr  # noqa: E402

import scoresde as ss  # noqa: E402

CSV = Path(__file__).parent / "results" / "trained_model_margins.csv"

def measure(seed: int, ref: rr.RingReference, exact_dpm: dict) -> dict:
    row: dict = {"seed": seed}
    models = {}
    for weighting in ("likelihood", "sigma2"):
        start = time.perf_counter()
        models[weighting] = rr.train_ring_mlp(weighting, seed)
        row[f"train_s_{weighting}"] = round(time.perf_counter() - start, 1)
    model, sde, gmm = models["likelihood"]
    for t, err in rr.score_errors(model, sde, gmm).items():
        row[f"score_rel_{t}"] = err
    for weighting, (m, s, g) in models.items():
        row[f"nll_gap_{weighting}"], row[f"nll_gap_se_{weighting}"] = rr.heldout_nll_gap(m, s, g)
    lw, s2 = (rr.heldout_bound_gaps(*models[w]) for w in ("likelihood", "sigma2"))
    diff = lw - s2
    se = float(diff.std()) / diff.numel() ** 0.5
    row.update(bound_gap_likelihood=float(lw.mean()), bound_gap_sigma2=float(s2.mean()),
               bound_paired_diff=float(diff.mean()), bound_paired_diff_4se=float(diff.mean()) + 4 * se)
    with torch.no_grad():
        em = ss.sample(model, sde, (rr.N, 2), sampler="euler_maruyama", steps=1000, seed=1, dtype=torch.float64).x
        flow = ss.decode(model, sde, sde.prior_sample((rr.N, 2), generator=torch.Generator().manual_seed(1),
                                                       dtype=torch.float64), rtol=1e-6, atol=1e-6)
    for name, x in (("em", em), ("flow", flow)):
        q = ref.quality(x)
        row.update({f"{name}_sw_ratio": q["sw_ratio"], f"{name}_chi2_p": q["chi2_p"],
                    f"{name}_dispersion": q["dispersion"],
                    f"{name}_dispersion_error": abs(q["dispersion"] - ref.dispersion)})
    for t, err in rr.ssm_score_errors(seed).items():
        row[f"ssm_rel_{t}"] = err
    dpm = rr.sampler_error_on_flow(model, sde, gmm)
    row.update(dpm_rms=dpm["rms"], dpm_rms_over_exact=dpm["rms"] / exact_dpm["rms"],
               dpm_shift=dpm["dispersion_shift"],
               dpm_shift_minus_exact=abs(dpm["dispersion_shift"] - exact_dpm["dispersion_shift"]))
    return row


def summary(rows: list[dict]) -> None:
    print(f"{len(rows)} seeds: {sorted(int(r['seed']) for r in rows)}")
    print(f"{'quantity':24s} {'min':>9s} {'max':>9s}  {'bound':>8s}  margin (worst seed to bound)")
    for key, (bound, kind) in rr.BOUNDS.items():
        if key not in rows[0]:
            continue
        values = [float(r[key]) for r in rows]
        worst = max(values) if kind == "max" else min(values)
        margin = bound - worst if kind == "max" else worst / bound
        text = f"{margin:+.4f}" if kind == "max" else f"x{margin:.3g} above"
        print(f"{key:24s} {min(values):9.4f} {max(values):9.4f}  {kind} {bound:<7g} {text}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--summary", action="store_true", help="print the table from the CSV and stop")
    p.add_argument("--add-ssm", action="store_true",
                   help="add the sliced-score-matching columns to the CSV's rows (for a CSV written without them)")
    args = p.parse_args()
    if args.summary or args.add_ssm:
        with open(CSV, newline="") as f:
            rows = list(csv.DictReader(f))
        if args.add_ssm:
            torch.set_num_threads(1)
            for row in rows:
                for t, err in rr.ssm_score_errors(int(row["seed"])).items():
                    row[f"ssm_rel_{t}"] = err
                print(row["seed"], {k: v for k, v in row.items() if k.startswith("ssm")}, flush=True)
            _write(rows)
        summary(rows)
        return
    torch.set_num_threads(1)
    print(f"device: {platform.processor() or platform.machine()}, torch {torch.__version__}, one thread")
    gmm = ss.analytic.ring_mixture()
    ref = rr.RingReference(gmm)
    exact_dpm = rr.sampler_error_on_flow(gmm.score_fn(ss.VPSDE()), ss.VPSDE(), gmm)
    print(f"DPM-Solver-2M, 50 steps, on the exact score's flow: rms {exact_dpm['rms']:.4f}, "
          f"dispersion shift {exact_dpm['dispersion_shift']:+.4f}")
    rows = []
    for seed in args.seeds:
        rows.append(measure(seed, ref, exact_dpm))
        print(rows[-1], flush=True)
    _write(rows)
    summary(rows)


def _write(rows: list[dict]) -> None:
    CSV.parent.mkdir(exist_ok=True)
    with open(CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
