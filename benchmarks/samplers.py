"""Sampler benchmark: quality and wall time against NFE, beside k-diffusion; solver overhead.

Part 1 (quality): on the 2-D ring of 8 unequal modes and the 16-D random mixture, with the exact
mixture score under VP, every scoresde sampler and k-diffusion's samplers (run on the same exact
score, as a Karras denoiser D(x_hat; sigma) = x0_hat) are run at NFE ~ 10 .. 1000. Recorded per
run: NFE counted, wall time, dispersion error |disp - disp_true|, mode-weight total variation,
sliced Wasserstein to a true set (and, for scale, SW between two true sets), exact NLL.

Part 2 (overhead): seconds per NFE of a sampler over seconds per bare score_fn call, for a small
MLP and a small conv net (tiny ones defined here), batch as stated.

k-diffusion is a benchmark-only dependency (``pip install --no-deps k-diffusion``). Its package
__init__ imports training code (torchvision, clip, ...); only ``k_diffusion.sampling`` is needed,
which uses nothing of ``k_diffusion.utils`` but ``append_dims``, so the package is loaded as a bare
namespace with a two-line stand-in for ``utils``.

Run: ``python benchmarks/samplers.py`` (a few minutes on 1 thread) or ``--quick`` (CI-size).
Outputs: benchmarks/results/samplers_quality.csv, samplers_quality.png, samplers_overhead.csv.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import pathlib
import sys
import time
import types

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scoresde as ss  # noqa: E402
from scoresde import metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


# ---- k-diffusion, sampling module only ---------------------------------------------------------
def load_k_diffusion_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    sys.modules.setdefault("k_diffusion", pkg)
    sys.modules.setdefault("k_diffusion.utils", utils)
    pkg.utils = utils
    import k_diffusion.sampling as kds

    return kds


class KarrasDenoiser(torch.nn.Module):
    r"""The exact score as a Karras denoiser on :math:`\hat x = x/\alpha_t`, :math:`\tilde\sigma = \sigma_t/\alpha_t`."""

    def __init__(self, score_fn, sde):
        super().__init__()
        self.score_fn, self.sde, self.nfe = score_fn, sde, 0

    def forward(self, xh, sigma):
        self.nfe += 1
        sigma = sigma.to(xh.dtype).expand(xh.shape[0])
        t = self.sde.t_from_log_snr(-sigma.log()).clamp(0, self.sde.T)
        a, s = self.sde.marginal(t)
        x = a[:, None] * xh
        return (x + s[:, None] ** 2 * self.score_fn(x, t)) / a[:, None]


def run_k_diffusion(kds, name, score_fn, sde, n, dim, nfe, seed, dtype):
    """Run k-diffusion sampler ``name`` at about ``nfe`` evaluations; returns (x, nfe counted)."""
    ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    a, s = sde.marginal(ends)
    s_max, s_min = float(s[0] / a[0]), float(s[1] / a[1])
    per_step = {"heun": 2, "dpm_2": 2, "dpmpp_2s_ancestral": 2}.get(name, 1)
    steps = max(2, round((nfe + (1 if per_step == 2 else 0)) / per_step))
    sigmas = kds.get_sigmas_karras(steps, s_min, s_max, rho=7.0).to(dtype)
    den = KarrasDenoiser(score_fn, sde)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=dtype) * math.sqrt(s_max**2 + 1)
    torch.manual_seed(seed)  # k-diffusion's ancestral samplers draw from the global generator
    fn = getattr(kds, f"sample_{name}")
    kwargs = {}
    if name in ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde"):
        kwargs["noise_sampler"] = kds.BrownianTreeNoiseSampler(x, s_min, s_max, seed=seed)
    out = fn(den, x, sigmas, disable=True, **kwargs)
    return out, den.nfe


K_SAMPLERS = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "euler_ancestral", "dpmpp_2s_ancestral",
              "dpmpp_2m_sde", "dpmpp_3m_sde"]

# scoresde samplers: (label, sampler, options, evaluations per step)
OURS = [
    ("euler_maruyama", "euler_maruyama", {}, 1),
    ("reverse_diffusion", "reverse_diffusion", {}, 1),
    ("ancestral", "ancestral", {}, 1),
    ("pc(rd+langevin)", "pc", dict(snr=0.1), 2),
    ("torchsde(euler)", "torchsde", {}, 1),
    ("ode(euler)", "ode", dict(method="euler"), 1),
    ("ode(rk4)", "ode", dict(method="rk4"), 4),
    ("heun", "heun", {}, 2),
    ("heun(churn=30)", "heun", dict(churn=30.0), 2),
    ("ddim", "dpm_solver", dict(order=1), 1),
    ("dpm_solver++2m", "dpm_solver", dict(order=2), 1),
    ("dpm_solver++3m", "dpm_solver", dict(order=3), 1),
    ("dpm_solver2s", "dpm_solver", dict(order=2, method="singlestep", prediction="noise"), 2),
    ("dpm_solver3s", "dpm_solver", dict(order=3, method="singlestep", prediction="noise"), 3),
]


def _record(rows, ref, family, label, x, nfe_count, wall, nfe_target):
    gmm, x = ref["gmm"], x.double()
    ok = bool(torch.isfinite(x).all())
    nan = float("nan")
    row = dict(
        mixture=ref["mixture"], family=family, sampler=label, nfe_target=nfe_target, nfe=nfe_count,
        wall_s=round(wall, 4),
        dispersion_err=abs(float(metrics.dispersion(x, gmm)) - ref["disp_true"]) if ok else nan,
        mode_tv=float(metrics.mode_weight_tv(x, gmm)) if ok else nan,
        sw=float(metrics.sliced_wasserstein(x, ref["true"])) if ok else nan,
        sw_true_pair=ref["sw_floor"],
        nll=float(metrics.nll(x, gmm)) if ok else nan,
        nll_true=ref["nll_true"],
    )
    rows.append(row)
    print(f"{row['mixture']:9s} {family:11s} {label:22s} nfe={nfe_count:5d} t={wall:7.3f}s "
          f"disp_err={row['dispersion_err']:.4f} tv={row['mode_tv']:.4f} sw={row['sw']:.4f} "
          f"(true pair {row['sw_true_pair']:.4f})", flush=True)


def quality_part(nfes, n, quick, kds, rows):
    mixtures = [("ring2d", ss.analytic.ring_mixture(), torch.float64),
                ("random16d", ss.analytic.random_mixture(16), torch.float32)]
    sde = ss.VPSDE()
    for mix_name, gmm, dtype in mixtures:
        score = gmm.score_fn(sde)
        gen = torch.Generator().manual_seed(999)
        true_a, true_b = gmm.sample(n, generator=gen), gmm.sample(n, generator=gen)
        disp_true = float(metrics.dispersion(true_a, gmm))
        sw_floor = float(metrics.sliced_wasserstein(true_a, true_b))

        ref = dict(mixture=mix_name, gmm=gmm, disp_true=disp_true, true=true_a, sw_floor=sw_floor,
                   nll_true=float(metrics.nll(true_a, gmm)))

        def record(family, label, x, nfe_count, wall, nfe_target, ref=ref):
            _record(rows, ref, family, label, x, nfe_count, wall, nfe_target)

        for target in nfes:
            for label, name, opts, per_step in OURS:
                if quick and label not in ("euler_maruyama", "heun", "dpm_solver++2m", "ode(euler)"):
                    continue
                steps = max(1, target // per_step)
                t0 = time.perf_counter()
                res = ss.sample(score, sde, (n, gmm.dim), sampler=name, steps=steps, seed=0, dtype=dtype,
                                check_every=0, **opts)
                record("scoresde", label, res.x, res.nfe, time.perf_counter() - t0, target)
            if kds is not None:
                for name in K_SAMPLERS:
                    if quick and name not in ("euler", "heun", "dpmpp_2m"):
                        continue
                    t0 = time.perf_counter()
                    x, cnt = run_k_diffusion(kds, name, score, sde, n, gmm.dim, target, 0, dtype)
                    record("k-diffusion", name, x, cnt, time.perf_counter() - t0, target)
        # adaptive ODE at a few tolerances (its NFE is its own)
        for tol in ([1e-3, 1e-5] if not quick else [1e-3]):
            t0 = time.perf_counter()
            res = ss.sample(score, sde, (n, gmm.dim), sampler="ode", rtol=tol, atol=tol, seed=0, dtype=dtype)
            record("scoresde", f"ode(dopri5,tol={tol:g})", res.x, res.nfe, time.perf_counter() - t0, res.nfe)


# ---- overhead ------------------------------------------------------------------------------------
class TinyMLP(torch.nn.Module):
    def __init__(self, dim=2, hidden=128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


class TinyUNet(torch.nn.Module):
    """A two-level conv net with a skip connection and time input, for 1x16x16 images."""

    def __init__(self, ch=32):
        super().__init__()
        self.inp = torch.nn.Conv2d(2, ch, 3, padding=1)
        self.down = torch.nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = torch.nn.Conv2d(2 * ch, 2 * ch, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
        self.out = torch.nn.Conv2d(2 * ch, 1, 3, padding=1)

    def forward(self, x, t):
        h = torch.cat([x, t[:, None, None, None].expand_as(x)], 1)
        h1 = torch.nn.functional.silu(self.inp(h))
        h2 = torch.nn.functional.silu(self.down(h1))
        h2 = torch.nn.functional.silu(self.mid(h2))
        u = torch.nn.functional.silu(self.up(h2))
        return self.out(torch.cat([u, h1], 1))


def _best_of(fn, repeats=3):
    """Smallest wall time of ``repeats`` runs of ``fn`` (the least disturbed by other load); fn's last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


OVERHEAD_SAMPLERS = ["euler_maruyama", "ancestral", "pc(rd+langevin)", "torchsde(euler)", "ode(euler)", "ode(rk4)",
                     "heun", "ddim", "dpm_solver++2m"]


def overhead_part(quick, kds, rows):
    sde = ss.VPSDE()
    nets = [("mlp(2-128x3-2), batch 512", TinyMLP(), (512, 2)),
            ("conv unet(1x16x16, 32ch), batch 16", TinyUNet(), (16, 1, 16, 16))]
    steps = 20 if quick else 100
    by_label = {o[0]: o for o in OURS}
    for label, net, shape in nets:
        net.eval()

        def score_fn(x, t, net=net):
            with torch.no_grad():
                return net(x, t)

        x0 = torch.randn(shape)
        t0 = torch.full((shape[0],), 0.5)
        calls = 20 if quick else 100
        bare, _ = _best_of(lambda x0=x0, t0=t0, score_fn=score_fn, calls=calls: [score_fn(x0, t0) for _ in range(calls)])
        bare /= calls

        def report(family, slabel, wall, nfe, label=label, bare=bare):
            per_nfe = wall / nfe
            rows.append(dict(net=label, family=family, sampler=slabel, nfe=nfe, bare_call_s=bare,
                             s_per_nfe=per_nfe, overhead_ratio=per_nfe / bare))
            print(f"{label:36s} {family:11s} {slabel:18s} nfe={nfe:4d} s/nfe={per_nfe:.2e} bare={bare:.2e} "
                  f"ratio={per_nfe / bare:.2f}", flush=True)

        for slabel in OVERHEAD_SAMPLERS:
            _, name, opts, _ = by_label[slabel]
            wall, res = _best_of(lambda name=name, opts=opts, score_fn=score_fn, shape=shape: ss.sample(
                score_fn, sde, shape, sampler=name, steps=steps, seed=0, check_every=0, **opts))
            report("scoresde", slabel, wall, res.nfe)
        if kds is not None and len(shape) == 2:
            for name in ["euler", "heun", "dpmpp_2m"]:
                wall, (_, cnt) = _best_of(lambda name=name, score_fn=score_fn, shape=shape: run_k_diffusion(
                    kds, name, score_fn, sde, shape[0], shape[1], steps, 0, torch.float32))
                report("k-diffusion", name, wall, cnt)


#: the curves of the figure: a handful, so that each can be followed (every sampler is in the CSV
#: and the tables): our stochastic, second-order and multistep samplers, and k-diffusion's two
#: deterministic counterparts
PLOTTED = [("scoresde", "euler_maruyama", "#1f77b4", "-o"), ("scoresde", "heun", "#6a8fd0", "-o"),
           ("scoresde", "dpm_solver++2m", "#d62728", "-o"), ("scoresde", "ddim", "#9467bd", "-o"),
           ("k-diffusion", "dpmpp_2m", "#ff7f0e", "--x"), ("k-diffusion", "heun", "#8c564b", "--x")]


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    mixes = sorted({r["mixture"] for r in rows})
    cols = [("dispersion_err", "|dispersion - true|"), ("mode_tv", "mode-weight TV"), ("sw", "sliced W2")]
    fig, axes = plt.subplots(len(mixes), len(cols), figsize=(4.2 * len(cols) + 2.2, 3.4 * len(mixes)), squeeze=False)
    for i, mix in enumerate(mixes):
        sub = [r for r in rows if r["mixture"] == mix]
        for j, (key, title) in enumerate(cols):
            ax = axes[i][j]
            for fam, lab, color, style in PLOTTED:
                pts = sorted((float(r["nfe"]), float(r[key])) for r in sub if r["family"] == fam and r["sampler"] == lab)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=4, lw=1.3, color=color,
                            label=lab if fam == "scoresde" else f"k-diffusion {lab} (same steps as ours: overlaps)"
                            if lab == "heun" else f"k-diffusion {lab}")
            if key == "sw":
                ax.axhline(float(sub[0]["sw_true_pair"]), color="0.35", lw=1, ls=":", label="two exact sets (one pair, itself noisy)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator([10, 30, 100, 300, 1000]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            # one tick rule on every axis, printed as plain numbers: powers of ten, with 2 and 5
            # between them where the axis spans less than two decades
            lo, hi = ax.get_ylim()
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if hi / lo < 100 else (1.0,)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3, which="major")
            ax.set_title(f"{mix}: {title}", fontsize=10)
            if i == len(mixes) - 1:
                ax.set_xlabel("score evaluations (NFE)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.995, 0.5), frameon=False, fontsize=9,
               title="exact score, seed 0")
    fig.suptitle("Sampler quality against evaluations (a selection; every sampler is in samplers_quality.csv)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def summary(suffix=""):
    """Markdown tables from the CSVs (for RESULTS.md)."""
    with open(RESULTS / f"samplers_quality{suffix}.csv") as f:
        rows = list(csv.DictReader(f))
    out = []
    for mix in sorted({r["mixture"] for r in rows}):
        sub = [r for r in rows if r["mixture"] == mix]
        targets = sorted({int(r["nfe_target"]) for r in sub if not r["sampler"].startswith("ode(dopri5")})
        out.append(f"\n**{mix}** (true-vs-true SW {float(sub[0]['sw_true_pair']):.3f}); each cell: "
                   "dispersion error / mode TV / SW / wall s\n")
        out.append("| sampler | " + " | ".join(f"NFE {t}" for t in targets) + " |")
        out.append("|---|" + "---|" * len(targets))
        labels = []
        for r in sub:
            key = (r["family"], r["sampler"])
            if key not in labels:
                labels.append(key)
        for fam, lab in labels:
            cells = []
            for t in targets:
                hit = [r for r in sub if r["family"] == fam and r["sampler"] == lab and int(r["nfe_target"]) == t]
                if not hit:
                    cells.append("")
                    continue
                r = hit[0]
                cells.append(f"{float(r['dispersion_err']):.3f} / {float(r['mode_tv']):.3f} / {float(r['sw']):.3f} / "
                             f"{float(r['wall_s']):.2f}")
            name = ("k:" if fam == "k-diffusion" else "") + lab
            if lab.startswith("ode(dopri5"):
                r = [r for r in sub if r["sampler"] == lab][0]
                name += f" (NFE {r['nfe']})"
                cells = [f"{float(r['dispersion_err']):.3f} / {float(r['mode_tv']):.3f} / {float(r['sw']):.3f} / "
                         f"{float(r['wall_s']):.2f}"] + [""] * (len(targets) - 1)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    with open(RESULTS / f"samplers_overhead{suffix}.csv") as f:
        over = list(csv.DictReader(f))
    out.append("\n| net | sampler | NFE | s per NFE | bare call s | overhead ratio |\n|---|---|---|---|---|---|")
    for r in over:
        fam = "k:" if r["family"] == "k-diffusion" else ""
        out.append(f"| {r['net']} | {fam}{r['sampler']} | {r['nfe']} | {float(r['s_per_nfe']):.2e} | "
                   f"{float(r['bare_call_s']):.2e} | {float(r['overhead_ratio']):.2f} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-size run (few samplers, NFE 10 and 100)")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 2000; quick 500)")
    p.add_argument("--summary", action="store_true", help="print markdown tables from the existing CSVs")
    p.add_argument("--plot", action="store_true", help="redraw the plot from the existing CSV")
    p.add_argument("--overhead-only", action="store_true", help="run only the solver-overhead part")
    args = p.parse_args(argv)
    if args.summary:
        print(summary("_quick" if args.quick else ""))
        return
    if args.plot:
        suffix = "_quick" if args.quick else ""
        with open(RESULTS / f"samplers_quality{suffix}.csv") as f:
            plot(list(csv.DictReader(f)), RESULTS / f"samplers_quality{suffix}.png")
        return
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    kds = load_k_diffusion_sampling()
    if kds is None:
        print("k-diffusion not installed: pip install --no-deps k-diffusion (benchmark-only)")
    n = args.n or (500 if args.quick else 2000)
    nfes = [10, 100] if args.quick else [10, 30, 100, 300, 1000]
    t0 = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    if not args.overhead_only:
        rows: list[dict] = []
        quality_part(nfes, n, args.quick, kds, rows)
        with open(RESULTS / f"samplers_quality{suffix}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        plot(rows, RESULTS / f"samplers_quality{suffix}.png")
    over: list[dict] = []
    overhead_part(args.quick, kds, over)
    with open(RESULTS / f"samplers_overhead{suffix}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(over[0]))
        w.writeheader()
        w.writerows(over)
    print(f"total {time.perf_counter() - t0:.1f}s; results in {RESULTS}")


if __name__ == "__main__":
    main()
