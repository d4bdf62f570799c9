"""Progressive distillation on the ring mixture, measured against the exact probability-flow map.

Teacher: the exact score of ``ss.analytic.ring_mixture()`` under ``ss.VPSDE()`` (no model error),
run as DDIM (eta = 0) on the 64-step grid of ``--grid`` (default: equal steps in t, the library's
default teacher grid) down to DDIM's default end time (sigma/alpha = 0.01). Student: ``ss.ScoreModel(ss.MLP(2, HIDDEN, 3), sde, "v", data_std=4)``,
freshly initialised, distilled by ``ss.distill`` over 6 rounds: 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1.

For each student (K steps) and, beside it, the exact score's DDIM at K and at 2K steps on the
log-SNR grid of that many steps (the same end points), and the fast samplers ``dpm_solver``
(2M multistep) and ``unipc`` at their defaults with K steps (K evaluations, the same end time),
from the same prior draws x_T (``--n``
per seed, ``--seeds``), all with ``denoise=False`` so that a map of K steps costs K evaluations:

* ``map_err``: mean Euclidean distance between the output and the exact PF-ODE map of the same
  x_T (``ss.decode`` of the exact score in float64, rtol = atol = 1e-8, to the same end time);
  ``ddim64_err``: the same distance to the 64-step DDIM map, which is what the rounds distil;
* ``disp_err``, ``mode_tv``, ``sw``: dispersion error, mode-weight TV and sliced W2 against exact
  samples, each with its noise floor (``benchmarks/few_step.py``'s ``Reference``: the same
  measure of another exact set of the same size); ``sw_ratio`` = sw / floor (the sampler
  quality check asks <= 1.5, and dispersion error <= 0.06).

Run (about 15 minutes on one core; the rounds' run folders go to ``--out``; a rerun skips the
rounds that finished and resumes an interrupted one):

    OMP_NUM_THREADS=1 python benchmarks/distill.py

Outputs: benchmarks/results/distill_ring.csv (one row per method, K and seed), distill_rounds.csv
(training cost per round), distill_ring.png (samples of the 1-, 2-, 4- and 8-step students and
DDIM); ``--summary`` prints the markdown tables from the CSVs.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import platform
import statistics
import sys
import time

import torch

import scoresde as ss

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from few_step import Reference  # noqa: E402  (benchmarks/ is a folder of scripts)

RESULTS = HERE / "results"
STEPS, ROUNDS = 64, 6
FAST = ("dpm_solver", "unipc")  # multistep DPM-Solver-2M and UniPC-2 at their defaults (log-SNR grid)


def write_rounds(path, rounds, batch_size) -> None:
    """Each round's training cost as CSV. A rerun skips the finished rounds (0 s in that call), so
    their cost is kept from the file it replaces."""
    path.parent.mkdir(exist_ok=True)
    before = {int(r["round"]): r for r in csv.DictReader(open(path))} if path.exists() else {}
    for r in rounds:
        if r.seconds == 0 and r.round in before:
            r.seconds = float(before[r.round]["seconds"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "teacher_steps", "student_steps", "train_steps", "batch_size", "seconds", "final_loss"])
        for r in rounds:
            w.writerow([r.round, r.teacher_steps, r.student_steps, r.train_steps, batch_size,
                        f"{r.seconds:.1f}", f"{r.final_loss:.6g}"])


def ddim(score, sde, x_T, grid):
    return ss.sample(score, sde, tuple(x_T.shape), sampler="ddim", grid=grid, x_start=x_T, denoise=False,
                     check_every=0).x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/scoresde_distill_ring", help="the distillation's run folders")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--train-steps", type=int, nargs="+", default=[8000, 6000, 6000, 6000, 6000, 6000])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--grid", default="uniform", choices=("log_snr", "uniform", "edm"),
                    help="the teacher's 64-step grid (the DDIM baselines always run on DDIM's default log-SNR grid)")
    ap.add_argument("--tag", default="", help="suffix of the result files (distill_ring<tag>.csv, ...)")
    ap.add_argument("--dispersion", metavar="DIR", default=None,
                    help="measure the students in DIR (a finished --out) on 20 000 draws against a 200 000-sample "
                         "reference (dispersion with little sampling noise) and stop")
    ap.add_argument("--summary", action="store_true", help="print the tables from the CSVs and stop")
    ap.add_argument("--digits", action="store_true", help="the 8x8 digits part instead (see digits())")
    ap.add_argument("--guided", action="store_true", help="guided distillation on the labelled ring instead (see guided())")
    ap.add_argument("--teacher-steps", type=int, default=1500, help="--digits: DSM steps of the U-Net teacher")
    args = ap.parse_args()
    if args.dispersion:
        dispersion(args.dispersion, args.tag)
        return
    if args.summary:
        plot_nfe(args.tag)
        summary(args.tag)
        return
    if args.digits:
        digits(args)
        return
    if args.guided:
        guided(args)
        return
    torch.set_num_threads(1)
    sde = ss.VPSDE()
    gmm64 = ss.analytic.ring_mixture().to(dtype=torch.float64)
    exact64 = gmm64.score_fn(sde)
    exact32 = ss.analytic.ring_mixture().to(dtype=torch.float32).score_fn(sde)
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 20_000, seed=1)
    torch.manual_seed(0)
    student = ss.ScoreModel(ss.MLP(2, args.hidden, 3), sde, "v", data_std=4.0)
    began = time.perf_counter()
    res = ss.distill(exact32, sde, data, steps=STEPS, rounds=ROUNDS, student=student, out_dir=args.out, grid=args.grid,
                     train_steps=args.train_steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=100,
                     lr_schedule="cosine", min_lr_ratio=0.05, ema_decay=0.995, checkpoint_every=500,
                     log_every=100, progress=False, seed=0)
    print(f"distillation: {time.perf_counter() - began:.0f} s in this call")
    write_rounds(RESULTS / f"distill_rounds{args.tag}.csv", res.rounds, args.batch_size)
    for r in res.rounds:
        print(f"round {r.round}: {r.teacher_steps} -> {r.student_steps} steps, {r.train_steps} steps of "
              f"{args.batch_size}, {r.seconds / 60:.2f} min, final loss {r.final_loss:.4g}")

    ref = Reference("ring", gmm64, args.n, args.seeds)
    students = {s.steps: s for s in res.students}
    rows, shown = [], {}
    for seed in args.seeds:
        x_T = sde.prior_sample((args.n, 2), generator=torch.Generator().manual_seed(seed)).to(torch.float64)
        exact_map = ss.likelihood.decode(exact64, sde, x_T, eps=float(res.grid[-1]), rtol=1e-8, atol=1e-8)
        distilled = ddim(exact64, sde, x_T, res.teacher_grid)  # what the rounds distil: the 64-step DDIM map
        for k in sorted(students):
            s = students[k]
            grid_k = ss.training.distillation.distillation_grid(sde, k, "log_snr")  # DDIM's own default grid
            own_k = ss.training.distillation.distillation_grid(sde, k, args.grid)
            assert torch.allclose(own_k, s.grid, rtol=1e-10, atol=1e-12), "the student's grid halves the teacher's"
            outs = {
                "student": ddim(s.model, sde, x_T.float(), s.grid).double(),
                "ddim": ddim(exact64, sde, x_T, grid_k),
                "ddim_2x": ddim(exact64, sde, x_T, ss.training.distillation.distillation_grid(sde, 2 * k, "log_snr")),
            }
            for name in FAST:  # the few-step samplers at the student's evaluations, their own defaults
                outs[name] = ss.sample(exact64, sde, tuple(x_T.shape), sampler=name, steps=k, x_start=x_T,
                                       denoise=False, check_every=0).x
            for method, x in outs.items():
                nfe = 2 * k if method == "ddim_2x" else k
                q = ref.score(x)
                floor = ref.floors[args.seeds.index(seed)]
                err = float((x - exact_map).norm(dim=1).mean())
                rows.append({"method": method, "steps": k, "nfe": nfe, "seed": seed, "map_err": err,
                             "ddim64_err": float((x - distilled).norm(dim=1).mean()),
                             **q, **{f"{m}_floor": floor[m] for m in q}})
                if seed == args.seeds[0]:
                    shown[method, k] = x
        shown["exact", 0] = exact_map
    with open(RESULTS / f"distill_ring{args.tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(shown, sorted(students), args.tag)
    plot_nfe(args.tag)
    summary(args.tag)


def plot(shown, ks, tag="") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [k for k in ks if k <= 8]
    fig, axes = plt.subplots(2, len(ks) + 1, figsize=(3 * (len(ks) + 1), 6), sharex=True, sharey=True)
    for col, k in enumerate(ks):
        for row, method in enumerate(("student", "ddim")):
            ax = axes[row, col]
            x = shown[method, k]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
            ax.set_title(f"{method}, {k} step{'s' if k > 1 else ''}", fontsize=9)
    for row in range(2):
        x = shown["exact", 0]
        axes[row, -1].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color="k")
        axes[row, -1].set_title("exact PF-ODE map", fontsize=9)
    for ax in axes.flat:
        ax.set_xlim(-6.5, 6.5)
        ax.set_ylim(-6.5, 6.5)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(RESULTS / f"distill_ring{tag}.png", dpi=110)


def dispersion(folder, tag="", n=20_000) -> None:
    """The dispersion of each student of ``folder`` (its ``round_<r>`` run folders, loaded with
    ``ss.load_run``) and of the exact PF-ODE map on ``n`` common prior draws, against the
    dispersion of 200 000 exact samples: at 2000 samples per seed the measure's own noise (the
    floor, 0.02-0.04) is close to the 0.06 tolerance; at 20 000 it is about 0.003."""
    torch.set_num_threads(1)
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float64)
    ref = float(ss.metrics.dispersion(gmm.sample(200_000, generator=torch.Generator().manual_seed(5)), gmm))
    rounds = sorted(pathlib.Path(folder).glob("round_*"), key=lambda p: int(p.name.split("_")[1]))
    grids = [ss.sampling.load_grid(r / "grid.json", sde=sde, sampler="ddim").times for r in rounds]
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(100)).double()
    exact = ss.likelihood.decode(gmm.score_fn(sde), sde, x_T, eps=float(grids[-1][-1]), rtol=1e-8, atol=1e-8)

    def disp(x):
        return float(ss.metrics.dispersion(x.double(), gmm))

    rows = [{"method": "exact samples", "steps": "", "disp": disp(gmm.sample(n, generator=torch.Generator().manual_seed(101))),
             "map_err": ""},
            {"method": "exact PF-ODE map", "steps": "", "disp": disp(exact), "map_err": 0.0}]
    import json

    teacher_times = json.loads((rounds[0] / "config.json").read_text())["loss"]["times"]
    x = ss.sample(gmm.score_fn(sde), sde, (n, 2), sampler="ddim", grid=teacher_times, x_start=x_T, denoise=False,
                  check_every=0).x
    rows.append({"method": "teacher: exact-score DDIM (the distilled map)", "steps": len(teacher_times) - 1,
                 "disp": disp(x), "map_err": float((x - exact).norm(dim=1).mean())})
    for r, times in zip(rounds, grids, strict=True):
        model = ss.load_run(r).model
        x = ss.sample(model, sde, (n, 2), sampler="ddim", grid=times, x_start=x_T.float(), denoise=False,
                      check_every=0).x.double()
        rows.append({"method": "student", "steps": len(times) - 1, "disp": disp(x),
                     "map_err": float((x - exact).norm(dim=1).mean())})
    with open(RESULTS / f"distill_ring_dispersion{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "steps", "disp", "disp_err", "map_err"])
        w.writeheader()
        for row in rows:
            w.writerow({**row, "disp_err": abs(row["disp"] - ref)})
    print(f"reference dispersion (200 000 exact samples): {ref:.4f}; {n} draws each")
    print("| method | steps | dispersion | error | map error |\n|---|---:|---:|---:|---:|")
    for row in rows:
        me = f"{row['map_err']:.4f}" if row["map_err"] != "" else ""
        print(f"| {row['method']} | {row['steps']} | {row['disp']:.4f} | {abs(row['disp'] - ref):.4f} | {me} |")


def plot_nfe(tag="") -> None:
    """Quality against evaluations: map error and dispersion error of the students, DDIM and the
    fast samplers at 1-32 evaluations (means over the seeds), from distill_ring<tag>.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(RESULTS / f"distill_ring{tag}.csv")))
    names = {"student": "distilled student", "ddim": "DDIM", "dpm_solver": "DPM-Solver-2M", "unipc": "UniPC-2"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, label in names.items():
        ks = sorted({int(r["steps"]) for r in rows if r["method"] == method})
        for ax, key in zip(axes, ("map_err", "disp_err"), strict=True):
            ys = [statistics.mean(float(r[key]) for r in rows if r["method"] == method and int(r["steps"]) == k)
                  for k in ks]
            ax.plot(ks, ys, marker="o", label=label, color="k" if method == "student" else None)
    floor = statistics.mean(float(r["disp_err_floor"]) for r in rows)
    axes[1].axhline(floor, color="grey", ls=":", label="exact samples (floor)")
    axes[1].axhline(0.06, color="grey", ls="--", label="quality-check tolerance")
    for ax, title in zip(axes, ("mean distance to the exact PF-ODE map", "dispersion error"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("score evaluations")
        ax.set_title(title, fontsize=10)
    axes[1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(RESULTS / f"distill_ring_nfe{tag}.png", dpi=110)


def summary(tag="") -> None:
    rows = list(csv.DictReader(open(RESULTS / f"distill_ring{tag}.csv")))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread\n")
    print("| method | steps | NFE | map error | to 64-step DDIM | dispersion err (floor) | mode TV (floor) | sliced W2 (floor) "
          "| SW / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {"student": 0, "ddim": 1, "ddim_2x": 2, "dpm_solver": 3, "unipc": 4}
    keys = sorted({(r["method"], int(r["steps"])) for r in rows}, key=lambda k: (-k[1], order[k[0]]))
    for method, k in keys:
        sel = [r for r in rows if r["method"] == method and int(r["steps"]) == k]

        def m(name, sel=sel):
            return statistics.mean(float(r[name]) for r in sel)

        name = {"student": "student", "ddim": "DDIM (exact score)", "ddim_2x": "DDIM, 2x steps",
                "dpm_solver": "DPM-Solver-2M (exact score)", "unipc": "UniPC-2 (exact score)"}[method]
        print(f"| {name} | {k} | {sel[0]['nfe']} | {m('map_err'):.4f} | {m('ddim64_err'):.4f} | {m('disp_err'):.3f} ({m('disp_err_floor'):.3f}) "
              f"| {m('mode_tv'):.3f} ({m('mode_tv_floor'):.3f}) | {m('sw'):.3f} ({m('sw_floor'):.3f}) "
              f"| {m('sw') / m('sw_floor'):.2f} |")
    rounds = list(csv.DictReader(open(RESULTS / f"distill_rounds{tag}.csv")))
    print("\n| round | teacher -> student steps | optimiser steps (batch) | minutes | final loss |")
    print("|---:|---|---:|---:|---:|")
    for r in rounds:
        print(f"| {r['round']} | {r['teacher_steps']} -> {r['student_steps']} | {r['train_steps']} ({r['batch_size']}) "
              f"| {float(r['seconds']) / 60:.2f} | {float(r['final_loss']):.4g} |")


def digits(args) -> None:
    """8x8 digits: a U-Net teacher trained here by DSM (v-parameterised, so that its students are
    too), distilled from 64 DDIM steps to 4 in 4 rounds; 500 samples each of the 4-step student,
    the teacher's 4-step and 64-step DDIM (all with the final denoising step: 5, 5 and 65
    evaluations), the library's digits feature distance (``ss.metrics.digits_frechet_distance``,
    not Inception FID) to the held-out digits, with its floor (500 real training digits), and one
    PNG with the three sample grids side by side.

        OMP_NUM_THREADS=1 python benchmarks/distill.py --digits --train-steps 300 --out /tmp/distill_digits
    """
    import json

    torch.set_num_threads(1)
    sde = ss.VPSDE()
    train, test = ss.digits_dataset("train"), ss.digits_dataset("test")
    out = pathlib.Path(args.out)
    began = time.perf_counter()
    torch.manual_seed(0)
    net = ss.UNet(1, 8, base=32, channel_mults=(1, 2), attn_resolutions=())
    teacher = ss.ScoreModel(net, sde, "v", data_std=0.6)
    tr = ss.Trainer(teacher, ss.DSMLoss(sde, "sigma2"), train, out / "teacher", steps=args.teacher_steps,
                    batch_size=128, lr=1e-3, warmup_steps=100, lr_schedule="cosine", ema_decay=0.999,
                    checkpoint_every=500, progress=False, seed=0)
    tr.resume()
    tr.fit()
    teacher_seconds = time.perf_counter() - began
    teacher = tr.ema.model
    rounds = 4
    k = args.train_steps[0]
    res = ss.distill(teacher, sde, train, steps=STEPS, rounds=rounds, out_dir=out / "distill", train_steps=k, grid=args.grid,
                     batch_size=128, lr=2e-4, warmup_steps=50, ema_decay=0.99, checkpoint_every=100,
                     progress=False, seed=0)
    clf = ss.metrics.digits_classifier()
    x_test = test.dequantized(torch.Generator().manual_seed(1))
    real = train.dequantized(torch.Generator().manual_seed(1))[:500]
    floor = ss.metrics.digits_frechet_distance(real, x_test, classifier=clf)
    x_T = sde.prior_sample((500, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    grid = ss.training.distillation.distillation_grid
    runs = {"student, 4 steps": (res.student, res.grid), "teacher DDIM, 4 steps": (teacher, grid(sde, 4, "log_snr")),
            "teacher DDIM, 64 steps": (teacher, grid(sde, 64, "log_snr"))}
    rows, shown = [], {}
    for name, (model, times) in runs.items():
        r = ss.sample(model, sde, tuple(x_T.shape), sampler="ddim", grid=times, x_start=x_T)
        x = r.x.clamp(-1, 1)
        fd = ss.metrics.digits_frechet_distance(x, x_test, classifier=clf)
        rows.append({"method": name, "nfe": r.nfe, "frechet": fd})
        shown[name] = x[:64]
        print(f"{name}: {r.nfe} NFE, digits feature distance {fd:.2f} (floor {floor:.2f})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (name, x) in zip(axes, shown.items(), strict=True):
        padded = torch.nn.functional.pad(x[:, 0], (1, 1, 1, 1), value=0.0)  # a grey frame around each digit
        tiles = padded.reshape(8, 8, 10, 10).permute(0, 2, 1, 3).reshape(80, 80)
        ax.imshow(tiles.numpy(), cmap="gray", vmin=-1, vmax=1)
        fd = next(r["frechet"] for r in rows if r["method"] == name)
        ax.set_title(f"{name}\n({next(r['nfe'] for r in rows if r['method'] == name)} NFE, feature dist. {fd:.2f})",
                     fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(RESULTS / "distill_digits.png", dpi=120)
    info = {"teacher_steps": args.teacher_steps, "teacher_seconds": teacher_seconds, "floor": floor, "rows": rows,
            "rounds": [{"round": r.round, "teacher_steps": r.teacher_steps, "student_steps": r.student_steps,
                        "train_steps": r.train_steps, "seconds": r.seconds, "final_loss": r.final_loss}
                       for r in res.rounds]}
    old = RESULTS / "distill_digits.json"
    if old.exists() and not any(r["seconds"] for r in info["rounds"]):  # a rerun that trained nothing
        prev = json.loads(old.read_text())
        info["teacher_seconds"], info["rounds"] = prev["teacher_seconds"], prev["rounds"]
    (RESULTS / "distill_digits.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


GUIDANCE = (0.0, 4.0)
WEIGHTS = (0.0, 1.0, 2.0, 4.0)


def guided(args) -> None:
    """Guided distillation (Meng et al. 2023) on the ring with its 8 components as classes: the
    exact class-conditional score as teacher, classifier-free guidance s_u + w (s_c - s_u) for
    w in [0, 4]; one student ``MLP(2, HIDDEN, 3, num_classes=8, guidance_range=(0, 4))`` learns the
    guided 64-step DDIM map (stage one), then 4 rounds take it to 4 steps with w as an input.
    For w in WEIGHTS and each student: the mean distance to the exact guided PF-ODE map of the
    same prior draws and labels (``ss.decode`` of the guided exact score), the label accuracy
    (the most likely component is the label) and the spread (mean squared distance to the
    label's mean over the exact map's), beside the guided DDIM of the exact score at the same
    steps and at twice as many (2 evaluations per step where w is not 0 or 1).

        OMP_NUM_THREADS=1 python benchmarks/distill.py --guided --grid uniform --out /tmp/distill_guided
    """
    torch.set_num_threads(1)
    sde = ss.VPSDE()
    gmm64 = ss.analytic.ring_mixture().to(dtype=torch.float64)
    exact64 = gmm64.class_score_fn(sde)
    exact32 = ss.analytic.ring_mixture().to(dtype=torch.float32).class_score_fn(sde)
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 20_000, seed=1)  # labels: the components
    torch.manual_seed(0)
    net = ss.MLP(2, args.hidden, 3, num_classes=8, guidance_range=GUIDANCE)
    student = ss.ScoreModel(net, sde, "v", data_std=4.0)
    rounds = 4
    began = time.perf_counter()
    res = ss.distill(exact32, sde, data, steps=STEPS, rounds=rounds, student=student, out_dir=args.out,
                     grid=args.grid, guidance=GUIDANCE, guidance_steps=args.train_steps[0],
                     train_steps=args.train_steps[1:rounds + 1], batch_size=args.batch_size, lr=args.lr,
                     warmup_steps=100, lr_schedule="cosine", min_lr_ratio=0.05, ema_decay=0.995,
                     checkpoint_every=500, log_every=100, progress=False, seed=0)
    print(f"distillation: {time.perf_counter() - began:.0f} s in this call")
    rows = []
    for seed in args.seeds:
        gen = torch.Generator().manual_seed(seed)
        x_T = sde.prior_sample((args.n, 2), generator=gen).to(torch.float64)
        y = torch.arange(args.n) % 8
        for w in WEIGHTS:
            guided_exact = ss.sampling.conditioning.conditional_score(exact64, y, w)
            exact_map = ss.likelihood.decode(guided_exact, sde, x_T, eps=float(res.grid[-1]), rtol=1e-8, atol=1e-8)
            evals = 1 if w in (0.0, 1.0) else 2

            def measure(method, k, nfe, x, y=y, w=w, exact_map=exact_map, seed=seed):
                near = ss.metrics.assign(x, gmm64)
                spread = ((x - gmm64.means[y]).square().sum(1).mean()
                          / (exact_map - gmm64.means[y]).square().sum(1).mean())
                rows.append({"method": method, "steps": k, "nfe": nfe, "w": w, "seed": seed,
                             "map_err": float((x - exact_map).norm(dim=1).mean()),
                             "label_acc": float((near == y).double().mean()), "spread": float(spread)})

            for s in res.students:
                if s.round == 0 and s.steps != STEPS:
                    continue
                x = ss.sample(s.model, sde, tuple(x_T.shape), sampler="ddim", grid=s.grid, x_start=x_T.float(),
                              cond=y, guidance=w, denoise=False, check_every=0).x.double()
                measure("student", s.steps, s.steps, x)
            for k in sorted({s.steps for s in res.students}):
                for mult, name in ((1, "ddim"), (2, "ddim_2x")):
                    if k * mult > STEPS:
                        continue
                    grid_k = ss.training.distillation.distillation_grid(sde, k * mult, "log_snr")
                    x = ss.sample(exact64, sde, tuple(x_T.shape), sampler="ddim", grid=grid_k, x_start=x_T, cond=y,
                                  guidance=w, denoise=False, check_every=0).x
                    measure(name, k, k * mult * evals, x)
    write_rounds(RESULTS / f"distill_guided_rounds{args.tag}.csv", res.rounds, args.batch_size)
    with open(RESULTS / f"distill_guided{args.tag}.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    guided_summary(args.tag)


def guided_summary(tag="") -> None:
    rows = list(csv.DictReader(open(RESULTS / f"distill_guided{tag}.csv")))
    print("| method | steps | " + " | ".join(f"w = {w:g}: NFE, map err, label acc, spread" for w in WEIGHTS) + " |")
    print("|---|---:|" + "---|" * len(WEIGHTS))
    order = {"student": 0, "ddim": 1, "ddim_2x": 2}
    keys = sorted({(r["method"], int(r["steps"])) for r in rows}, key=lambda k: (-k[1], order[k[0]]))
    for method, k in keys:
        cells = []
        for w in WEIGHTS:
            sel = [r for r in rows if r["method"] == method and int(r["steps"]) == k and float(r["w"]) == w]

            def m(name, sel=sel):
                return statistics.mean(float(r[name]) for r in sel)
            cells.append(f"{sel[0]['nfe']}, {m('map_err'):.3f}, {m('label_acc'):.3f}, {m('spread'):.2f}")
        print(f"| {method} | {k} | " + " | ".join(cells) + " |")
    for r in csv.DictReader(open(RESULTS / f"distill_guided_rounds{tag}.csv")):
        print(f"round {r['round']}: {r['teacher_steps']} -> {r['student_steps']}, {r['train_steps']} steps, "
              f"{float(r['seconds']) / 60:.2f} min, final loss {float(r['final_loss']):.4g}")


if __name__ == "__main__":
    main()
