"""Few-step sampling benchmark: quality at 5, 10 and 20 score evaluations against the peers.

On the exact score of four Gaussian mixtures (so no model error enters) under VP and VE, every
method draws ``--n`` samples (default 2000) for each of ``--seeds`` (default 0 1 2) at each
evaluation budget (default 5, 10, 20), and is scored against exact samples:

* dispersion error ``|dispersion(x) - dispersion(exact)|`` (``ss.metrics.dispersion``; the
  exact value from 20 000 exact samples),
* mode-weight TV ``1/2 sum_k |w_x(k) - w_exact(k)|`` between the occupancies of the mixture's
  components (the exact occupancy from the same 20 000 samples),
* sliced W2 to an exact set of ``--n``;

each next to its noise floor: the same measure of another exact set of ``--n`` (one per seed),
drawn as a band in the plots.

Problems: ``ring`` (``ss.analytic.ring_mixture()``: 8 modes, std 0.3, radius 4), ``narrow`` (a
4x4 grid of modes, std 0.2, spacing 1.4, unequal weights), ``mix16`` and ``mix64``
(``ss.analytic.random_mixture(16 / 64)``). SDEs: ``ss.VPSDE()`` and ``ss.VESDE()``.

Methods (each row of the CSV names its family and method):

* ``ours``: every registered sampler (``ss.available_samplers()``, so solvers added later are in
  without an edit) with its defaults, ``ss.sample(score, sde, shape, sampler=name, steps=S)``,
  ``S`` the largest number of steps whose evaluation count (final denoising step included) fits
  the budget, found by probing with two samples;
* ``ours-named``: named configurations (``NAMED`` below, plus ``--config``);
* ``ours-fitted``: ``ss.sampling.optimize_grid(...)`` grids for ``--fit`` samplers, when that
  function exists (otherwise one note row says it was skipped);
* ``k-diffusion``: ``sample_dpmpp_2m``, ``sample_dpmpp_3m_sde`` and ``sample_heun`` on the Karras
  grid (rho 7) between the SDE's end points, the exact score wrapped as the denoiser
  ``D(x_hat, sigma_hat)`` (VE: ``D = x + sigma^2 s``; VP: on ``x_hat = x / alpha`` at
  ``sigma_hat = sigma / alpha``). Only k-diffusion's ``k_diffusion/sampling.py`` is loaded, from the
  source given by ``--k-diffusion`` or ``$KDIFFUSION_SRC`` (a file, a checkout, or a bare git
  mirror such as the one the ``fetch`` tool makes of github:crowsonkb/k-diffusion); its code is
  never copied here;
* ``diffusers``: ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler`` (defaults) for
  VP, on the 1000-step discrete schedule that matches the VP (``ss.DiscreteVPSDE(alphas_cumprod=
  alpha(t_k)^2)``, ``t_k = (k+1)/1000``) with the exact score as epsilon prediction
  ``-sigma_k s(x, t_k)``. diffusers has no DPM-Solver or UniPC for a VE schedule; for VE it runs
  ``EDMDPMSolverMultistepScheduler`` (DPM-Solver++ in EDM's sigma space, which is VE's
  ``x = x_0 + sigma n``) between VE's sigma_min and sigma_max.

Part 2 (``--overhead``): per-evaluation overhead of ``ss.sample``: wall time of a call over the
time spent inside the score function, for the exact 16-D oracle and an MLP (goals: 1.10 and
1.03), beside k-diffusion's and diffusers' loops on the same score.

Run (one command, about ten minutes on one busy core; ``--quick`` is a smoke run):

    OMP_NUM_THREADS=1 python benchmarks/few_step.py --k-diffusion /path/to/k-diffusion

Outputs: benchmarks/results/few_step.csv, few_step_overhead.csv, few_step_vp.png,
few_step_ve.png, few_step_heatmap.png; ``--summary`` prints the tables for RESULTS.md and
``--plot`` redraws the figures, both from the CSVs.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import math
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time
import types

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scoresde as ss  # noqa: E402
from scoresde import metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
KDIFF_DEFAULT = "/work/.mirror/crowsonkb+k-diffusion/repo"
REF_N = 20_000  # exact samples behind the exact dispersion and occupancy

#: named configurations of ours: (label, sampler, keyword arguments of ss.sample / the sampler)
NAMED = [
    ("ddim", "dpm_solver", {"order": 1}),
    ("dpm_solver++3m", "dpm_solver", {"order": 3}),
    ("dpm_solver 2S (noise)", "dpm_solver", {"order": 2, "method": "singlestep", "prediction": "noise"}),
    ("dpm_solver, uniform t", "dpm_solver", {"grid": "uniform"}),
    ("dpm_solver, edm grid", "dpm_solver", {"grid": "edm"}),
    ("heun, log-SNR grid", "heun", {"grid": "log_snr"}),
    ("ode(midpoint)", "ode", {"method": "midpoint"}),
    ("ode(rk4)", "ode", {"method": "rk4"}),
    ("ancestral, log-SNR grid", "ancestral", {"grid": "log_snr"}),
]
FIT_DEFAULT = "dpm_solver,unipc,heun"
K_SAMPLERS = ["dpmpp_2m", "dpmpp_3m_sde", "heun"]
METRICS = [("disp_err", "dispersion error"), ("mode_tv", "mode-weight TV"), ("sw", "sliced W2")]


# ---- problems --------------------------------------------------------------------------------
def narrow_grid() -> ss.analytic.GaussianMixture:
    """A 4x4 grid of modes with std 0.2 at spacing 1.4 (5 stds between neighbours' centres),
    weights 1..16 in a fixed scrambled order."""
    c = 1.4 * (torch.arange(4, dtype=torch.float64) - 1.5)
    means = torch.cartesian_prod(c, c)
    weights = torch.tensor([7, 1, 12, 4, 15, 9, 2, 13, 5, 16, 10, 3, 11, 6, 14, 8], dtype=torch.float64)
    return ss.analytic.GaussianMixture(means, 0.2, weights)


PROBLEMS = {
    "ring": lambda: ss.analytic.ring_mixture(),
    "narrow": narrow_grid,
    "mix16": lambda: ss.analytic.random_mixture(16),
    "mix64": lambda: ss.analytic.random_mixture(64),
}
SDES = {"vp": lambda: ss.VPSDE(), "ve": lambda: ss.VESDE()}


def occupancy(x, gmm):
    return metrics.mode_weights(x.double(), gmm)


class Reference:
    """Exact samples of one problem: the reference values and the noise floors."""

    def __init__(self, name, gmm, n, seeds):
        self.name, self.gmm = name, gmm
        gen = torch.Generator().manual_seed(10_007)
        big = gmm.sample(REF_N, generator=gen)
        self.disp = float(metrics.dispersion(big, gmm))
        self.occ = occupancy(big, gmm)
        self.true = gmm.sample(n, generator=gen)  # the sliced-W2 reference set
        self.floors = [self.score(gmm.sample(n, generator=torch.Generator().manual_seed(20_011 + s))) for s in seeds]

    def score(self, x):
        x = x.double()
        if not bool(torch.isfinite(x).all()):
            nan = float("nan")
            return {"disp_err": nan, "mode_tv": nan, "sw": nan}
        return {"disp_err": abs(float(metrics.dispersion(x, self.gmm)) - self.disp),
                "mode_tv": 0.5 * float((occupancy(x, self.gmm) - self.occ).abs().sum()),
                "sw": float(metrics.sliced_wasserstein(x, self.true))}


# ---- ours ------------------------------------------------------------------------------------
class Budget:
    """The largest ``steps`` whose evaluation count fits a budget, per (method, SDE), found by
    probing ss.sample with two samples (the count does not depend on the batch)."""

    def __init__(self):
        self.cache = {}

    def nfe(self, key, score, sde, dim, sampler, kwargs, steps):
        if (key, steps) not in self.cache:
            try:
                res = ss.sample(score, sde, (2, dim), sampler=sampler, steps=steps, seed=0, check_every=0, **kwargs)
                self.cache[key, steps] = res.nfe
            except ss.ScoreSDEError as err:
                self.cache[key, steps] = err
        return self.cache[key, steps]

    def steps(self, key, score, sde, dim, sampler, kwargs, budget):
        """(steps, nfe) or (None, reason)."""
        one = self.nfe(key, score, sde, dim, sampler, kwargs, 1)
        if isinstance(one, Exception):
            return None, f"{type(one).__name__}: {str(one).splitlines()[0]}"
        if one > budget:
            return None, f"one step already takes {one} evaluations (adaptive, or several per step)"
        two = self.nfe(key, score, sde, dim, sampler, kwargs, 2)
        if isinstance(two, Exception):
            return 1, one
        if two <= one:
            return None, f"steps do not set its evaluations ({one} at 1 step, {two} at 2: adaptive)"
        s = max(1, 1 + (budget - one) // (two - one))  # linear guess, then checked both ways
        while s > 1:
            n = self.nfe(key, score, sde, dim, sampler, kwargs, s)
            if not isinstance(n, Exception) and n <= budget:
                break
            s -= 1
        while True:
            nxt = self.nfe(key, score, sde, dim, sampler, kwargs, s + 1)
            if isinstance(nxt, Exception) or nxt > budget:
                break
            s += 1
        n = self.nfe(key, score, sde, dim, sampler, kwargs, s)
        return (s, n) if not isinstance(n, Exception) else (None, str(n).splitlines()[0])


def fitted_grid(score, sde, dim, n, steps, sampler):
    """``ss.sampling.optimize_grid`` for ``sampler`` at ``steps``, or a note why not."""
    fn = getattr(ss.sampling, "optimize_grid", None)
    if fn is None:
        return None, "ss.sampling.optimize_grid does not exist yet"
    kwargs = {"sampler": sampler}
    try:
        params = inspect.signature(fn).parameters
        if "seed" in params:
            kwargs["seed"] = 12_345  # fitted on other draws than the ones scored
    except (TypeError, ValueError):
        pass
    try:
        return fn(score, sde, (n, dim), steps, **kwargs), None
    except Exception as err:  # a fit that fails is reported, not fatal
        return None, f"optimize_grid failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


# ---- k-diffusion -----------------------------------------------------------------------------
def load_k_diffusion(source: str | None):
    """k-diffusion's ``sampling`` module, loaded alone from ``source`` (a sampling.py, a checkout,
    or a bare git mirror), under a private package name; (module, description) or (None, reason)."""
    source = source or os.environ.get("KDIFFUSION_SRC") or (KDIFF_DEFAULT if pathlib.Path(KDIFF_DEFAULT).exists() else None)
    if not source:
        return None, "no k-diffusion source: pass --k-diffusion (or set KDIFFUSION_SRC) to github:crowsonkb/k-diffusion"
    p = pathlib.Path(source)
    what = str(p)
    try:
        if p.is_file():
            text = p.read_text()
        elif (p / "k_diffusion" / "sampling.py").is_file():
            text = (p / "k_diffusion" / "sampling.py").read_text()
        elif (p / "objects").is_dir() or (p / ".git").exists():
            git = ["git", f"--git-dir={p / '.git' if (p / '.git').exists() else p}"]
            text = subprocess.run([*git, "show", "HEAD:k_diffusion/sampling.py"], check=True, capture_output=True,
                                  text=True).stdout
            commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
            what = f"{p} at {commit.strip()[:12]}"
        else:
            return None, f"k-diffusion source {source!r} holds no k_diffusion/sampling.py"
    except (OSError, subprocess.CalledProcessError) as err:
        return None, f"cannot read k-diffusion's sampling.py from {source!r}: {err}"
    pkg_name = "_kdiffusion_bench"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = []
    utils = types.ModuleType(f"{pkg_name}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]  # the one helper sampling.py uses
    pkg.utils = utils
    sys.modules[pkg_name], sys.modules[f"{pkg_name}.utils"] = pkg, utils
    mod = types.ModuleType(f"{pkg_name}.sampling")
    mod.__package__ = pkg_name
    exec(compile(text, "k_diffusion/sampling.py", "exec"), mod.__dict__)
    return mod, what


class Denoiser:
    r"""The exact score as a Karras denoiser on :math:`\hat x = x/\alpha_t` at :math:`\hat\sigma = \sigma_t/\alpha_t`."""

    def __init__(self, score, sde):
        self.score, self.sde, self.nfe = score, sde, 0

    def __call__(self, xh, sigma):
        self.nfe += 1
        sigma = sigma.to(xh.dtype).expand(xh.shape[0])
        t = self.sde.t_from_log_snr(-sigma.log()).clamp(0, self.sde.T)
        a, s = self.sde.marginal(t)
        a, s = a[:, None], s[:, None]
        x = a * xh
        return (x + s * s * self.score(x, t)) / a


def sigma_range(sde):
    a, s = sde.marginal(torch.tensor([sde.T, sde.eps], dtype=torch.float64))
    return float(s[1] / a[1]), float(s[0] / a[0]), float(a[0])


def run_k(kds, name, score, sde, n, dim, budget, seed, dtype):
    steps = (budget + 1) // 2 if name == "heun" else budget  # heun: 2 per step, Euler into sigma = 0
    s_min, s_max, a_T = sigma_range(sde)
    sigmas = kds.get_sigmas_karras(steps, s_min, s_max, rho=7.0).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = sde.prior_sample((n, dim), generator=gen, dtype=dtype) / a_T  # our prior, in x_hat
    torch.manual_seed(seed)  # heun draws (unused, churn 0) from the global generator
    kwargs = {}
    if name.endswith("_sde"):  # Gaussian increments from our generator (k-diffusion's default is a Brownian tree)
        kwargs["noise_sampler"] = lambda s, s_next: torch.randn(x.shape, generator=gen, dtype=dtype)
    den = Denoiser(score, sde)
    out = getattr(kds, f"sample_{name}")(den, x, sigmas, disable=True, **kwargs)
    return out, den.nfe


# ---- diffusers -------------------------------------------------------------------------------
def vp_discrete(sde):
    """alphas_cumprod of the VP at t_k = (k+1)/1000, and the DiscreteVPSDE they define."""
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    abar = sde.marginal(t)[0].square()
    return abar, ss.DiscreteVPSDE(alphas_cumprod=abar)


def run_diffusers(kind, gmm, sde, n, dim, budget, seed, dtype):
    import diffusers

    gen = torch.Generator().manual_seed(seed)
    calls = 0
    if kind == "edm_dpmsolver":  # VE: EDM's sigma space
        s_min, s_max, _ = sigma_range(sde)
        sch = diffusers.EDMDPMSolverMultistepScheduler(sigma_min=s_min, sigma_max=s_max, prediction_type="epsilon")
        sch.set_timesteps(budget)
        score = gmm.to(dtype=dtype).score_fn(sde)
        x = sde.prior_sample((n, dim), generator=gen, dtype=dtype)
        sd = sch.config.sigma_data
        for i, t in enumerate(sch.timesteps):
            sigma = float(sch.sigmas[i])
            sch.scale_model_input(x, t)  # sets the step index; the exact score takes x itself
            tt = sde.t_from_log_snr(torch.full((n,), -math.log(sigma), dtype=dtype)).clamp(0, sde.T)
            den = x + sigma**2 * score(x, tt)
            c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2) ** 0.5
            x = sch.step((den - c_skip * x) / c_out, t, x).prev_sample
            calls += 1
        return x, calls
    abar, dsde = vp_discrete(sde)
    betas = (1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])).tolist()
    cls = {"dpmsolver": diffusers.DPMSolverMultistepScheduler, "unipc": diffusers.UniPCMultistepScheduler}[kind]
    sch = cls(num_train_timesteps=1000, trained_betas=betas, prediction_type="epsilon")
    sch.set_timesteps(budget)
    score = gmm.to(dtype=dtype).score_fn(dsde)
    x = torch.randn(n, dim, generator=gen, dtype=dtype) * sch.init_noise_sigma
    for k in sch.timesteps:
        t = dsde.t_from_timestep(torch.full((n,), float(k), dtype=dtype))
        eps = -dsde.marginal(t)[1][:, None] * score(x, t)
        x = sch.step(eps, k, x).prev_sample
        calls += 1
    return x, calls


# ---- the quality part --------------------------------------------------------------------------
def methods(args, kds):
    """(family, label, runner-factory) of every method; runner(score, gmm, sde, ...) -> (x, nfe)."""
    out = []
    names = ss.available_samplers() if args.samplers == "all" else [s.strip() for s in args.samplers.split(",")]
    for name in names:
        out.append(("ours", name, ("ss", name, {})))
    named = list(NAMED)
    for spec in args.config:
        label, _, rest = spec.partition("=")
        sampler, _, opts = rest.partition(":")
        kw = {}
        for item in filter(None, opts.split(",")):
            k, _, v = item.partition("=")
            kw[k.strip()] = _value(v.strip())
        named.append((label.strip(), sampler.strip(), kw))
    for label, sampler, kw in named:
        out.append(("ours-named", label, ("ss", sampler, kw)))
    for name in filter(None, args.fit.split(",")):
        out.append(("ours-fitted", f"{name}, fitted grid", ("fit", name, {})))
    for name in K_SAMPLERS:
        out.append(("k-diffusion", f"k:{name}", ("k", name, {})))
    for kind, label in (("dpmsolver", "d:DPMSolverMultistep"), ("unipc", "d:UniPCMultistep"),
                        ("edm_dpmsolver", "d:EDMDPMSolverMultistep")):
        out.append(("diffusers", label, ("d", kind, {})))
    if args.only:
        pat = re.compile(args.only)
        out = [m for m in out if pat.search(m[1])]
    return out


def _value(text):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def quality(args, rows, notes):
    kds, kdesc = (None, "off") if args.no_peers else load_k_diffusion(args.k_diffusion)
    notes.append(f"k-diffusion: {kdesc}")
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    registered = set(ss.available_samplers())
    budget = Budget()
    todo = methods(args, kds)
    for pname in args.problems.split(","):
        gmm = PROBLEMS[pname]()
        ref = Reference(pname, gmm, args.n, args.seeds)
        for sname in args.sdes.split(","):
            sde = SDES[sname]()
            score = gmm.to(dtype=dtype).score_fn(sde)
            for s, fl in zip(args.seeds, ref.floors, strict=True):
                rows.append(dict(problem=pname, sde=sname, family="exact", method="two exact sets", nfe_budget="",
                                 nfe="", seed=s, steps="", wall_s="", status="floor", note="", **fl))

            def record(family, label, budget_, seed, x, nfe, wall, steps="", note="", ref=ref, pname=pname, sname=sname):
                sc = ref.score(x)
                rows.append(dict(problem=pname, sde=sname, family=family, method=label, nfe_budget=budget_, nfe=nfe,
                                 seed=seed, steps=steps, wall_s=round(wall, 4),
                                 status="ok" if math.isfinite(sc["sw"]) else "non-finite", note=note, **sc))

            def skip(family, label, budget_, note, pname=pname, sname=sname):
                rows.append(dict(problem=pname, sde=sname, family=family, method=label, nfe_budget=budget_, nfe="",
                                 seed="", steps="", wall_s="", status="skipped", note=note,
                                 disp_err="", mode_tv="", sw=""))

            for family, label, (kind, name, kw) in todo:
                for b in args.nfe:
                    t_method = time.perf_counter()
                    if kind in ("ss", "fit"):
                        if name not in registered:
                            skip(family, label, b, f"sampler {name!r} is not registered (yet)")
                            continue
                        steps, got = budget.steps((label, sname), score, sde, gmm.dim, name, kw, b)
                        if steps is None:
                            skip(family, label, b, got)
                            continue
                        grid_kw = {}
                        if kind == "fit":
                            grid, why = fitted_grid(score, sde, gmm.dim, args.n, steps, name)
                            if grid is None:
                                skip(family, label, b, why)
                                continue
                            grid_kw = {"grid": grid}
                        for seed in args.seeds:
                            t0 = time.perf_counter()
                            try:
                                res = ss.sample(score, sde, (args.n, gmm.dim), sampler=name, steps=steps, seed=seed,
                                                dtype=dtype, check_every=0, **kw, **grid_kw)
                            except ss.NonFiniteError as err:
                                record(family, label, b, seed, torch.full((1, gmm.dim), float("nan")), got,
                                       time.perf_counter() - t0, steps, str(err).splitlines()[0][:120])
                                continue
                            record(family, label, b, seed, res.x, res.nfe, time.perf_counter() - t0, steps)
                    elif kind == "k":
                        if kds is None:
                            skip(family, label, b, kdesc)
                            continue
                        for seed in args.seeds:
                            t0 = time.perf_counter()
                            x, nfe = run_k(kds, name, score, sde, args.n, gmm.dim, b, seed, dtype)
                            record(family, label, b, seed, x, nfe, time.perf_counter() - t0)
                    else:
                        if args.no_peers:
                            skip(family, label, b, "--no-peers")
                            continue
                        if (name == "edm_dpmsolver") != (sname == "ve"):
                            skip(family, label, b, "VE only: EDM's sigma space" if name == "edm_dpmsolver" else
                                 "VP only: diffusers has no DPM-Solver / UniPC on a VE schedule")
                            continue
                        for seed in args.seeds:
                            t0 = time.perf_counter()
                            x, nfe = run_diffusers(name, gmm, sde, args.n, gmm.dim, b, seed, dtype)
                            record(family, label, b, seed, x, nfe, time.perf_counter() - t0)
                    done = [r for r in rows[-len(args.seeds):] if r["method"] == label and r["status"] != "skipped"]
                    if done and args.verbose:
                        print(f"{pname:6s} {sname} {label:28s} budget {b:2d} nfe {done[0]['nfe']!s:>3} "
                              + " ".join(f"{k}={statistics.fmean(float(r[k]) for r in done):.4f}" for k, _ in METRICS)
                              + f"  ({time.perf_counter() - t_method:.1f} s)", flush=True)


# ---- the overhead part -------------------------------------------------------------------------
class Timed:
    """A score function that adds up the time spent inside it (CPU ops are synchronous)."""

    def __init__(self, fn):
        self.fn, self.inside, self.calls = fn, 0.0, 0

    def __call__(self, x, t):
        t0 = time.perf_counter()
        out = self.fn(x, t)
        self.inside += time.perf_counter() - t0
        self.calls += 1
        return out


def overhead(args, rows):
    kds, _ = (None, "") if args.no_peers else load_k_diffusion(args.k_diffusion)
    sde = ss.VPSDE()
    gmm = ss.analytic.random_mixture(16).to(dtype=torch.float32)
    torch.manual_seed(0)
    net = ss.ScoreModel(ss.MLP(16, 256, 3), sde, data_std=3.0).eval()

    def mlp(x, t):
        with torch.no_grad():
            return net(x, t)

    oracles = [("exact 16-D mixture (8 comp.), batch 2000", gmm.score_fn(sde), 2000),
               ("MLP(16, 256, 3) score model, batch 2000", mlp, 2000)]
    samplers = [("ours", name, name, {}) for name in ss.available_samplers() if name not in ("ode", "annealed_langevin")]
    samplers += [("ours-named", lab, smp, kw) for lab, smp, kw in NAMED if lab in ("ddim", "dpm_solver++3m")]
    for label, score, n in oracles:
        for nfe in args.overhead_nfe:
            runs = []  # (family, method, run(timed, rep) -> nfe)
            for family, lab, name, kw in samplers:
                if name not in ss.available_samplers():
                    continue
                steps, got = Budget().steps(lab, score, sde, 16, name, kw, nfe)
                if steps is None:
                    continue
                runs.append((family, lab, lambda timed, rep, name=name, steps=steps, kw=kw, n=n: ss.sample(
                    timed, sde, (n, 16), sampler=name, steps=steps, seed=rep, check_every=0, **kw).nfe))
            if kds is not None:
                runs.append(("k-diffusion", "k:dpmpp_2m",
                             lambda timed, rep, n=n, nfe=nfe: run_k(kds, "dpmpp_2m", timed, sde, n, 16, nfe, rep,
                                                                    torch.float32)[1]))
            # the repeats go round the methods, each round in a rotated order: the process slows as
            # it runs (measured: DDIM 1.07 early, dpm_solver order 1, the same update, 1.22 late in one run), and a method
            # measured only early or only late would carry that drift
            ratios, walls, counts = ([[] for _ in runs] for _ in range(3))  # by position: labels repeat
            for rep in range(args.repeats):
                k = rep % len(runs)
                for j in list(range(k, len(runs))) + list(range(k)):
                    timed = Timed(score)
                    t0 = time.perf_counter()
                    counts[j].append(runs[j][2](timed, rep))
                    wall = time.perf_counter() - t0
                    ratios[j].append(wall / timed.inside)
                    walls[j].append(wall)
            for j, (family, lab, _) in enumerate(runs):
                _over(rows, label, family, lab, counts[j][-1], walls[j], ratios[j])


def _over(rows, oracle, family, method, nfe, walls, ratios):
    row = dict(oracle=oracle, family=family, method=method, nfe=nfe, repeats=len(ratios),
               best_wall_s=round(min(walls), 5), median_ratio=round(statistics.median(ratios), 4),
               min_ratio=round(min(ratios), 4), max_ratio=round(max(ratios), 4))
    rows.append(row)
    print(f"overhead {oracle[:28]:28s} {method:24s} nfe {nfe:3d}  wall/inside median {row['median_ratio']:.3f} "
          f"(min {row['min_ratio']:.3f}, max {row['max_ratio']:.3f})", flush=True)


# ---- plots -----------------------------------------------------------------------------------
STYLE = {"ours": dict(ls="-", marker="o"), "ours-named": dict(ls="-", marker="o"),
         "ours-fitted": dict(ls="-", marker="D"), "k-diffusion": dict(ls="--", marker="x"),
         "diffusers": dict(ls=":", marker="s")}
#: the curves of the line plots: a fixed set, so a method keeps its colour in every panel
HEADLINE = [("ours", "dpm_solver", "#1f4e99"), ("ours", "heun", "#6a8fd0"), ("ours", "unipc", "#7b3fa0"),
            ("ours-fitted", "dpm_solver, fitted grid", "#00a0b0"), ("ours-fitted", "unipc, fitted grid", "#b05cc8"),
            ("k-diffusion", "k:dpmpp_2m", "#e07b00"), ("k-diffusion", "k:dpmpp_3m_sde", "#b34700"),
            ("diffusers", "d:DPMSolverMultistep", "#2e8b3a"), ("diffusers", "d:UniPCMultistep", "#8fbf3f"),
            ("diffusers", "d:EDMDPMSolverMultistep", "#2e8b3a")]


def _means(rows):
    """{(problem, sde, family, method, budget): {metric: (mean, min, max), 'nfe': nfe}} over seeds."""
    groups = {}
    for r in rows:
        if r["status"] in ("skipped", "floor"):
            continue
        groups.setdefault((r["problem"], r["sde"], r["family"], r["method"], int(r["nfe_budget"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        entry = {"nfe": max(int(r["nfe"]) for r in rs)}
        for m, _ in METRICS:
            vals = [float(r[m]) for r in rs]
            entry[m] = (statistics.fmean(vals), min(vals), max(vals))
        out[key] = entry
    return out


def _floors(rows):
    fl = {}
    for r in rows:
        if r["status"] == "floor":
            fl.setdefault((r["problem"], r["sde"]), []).append(r)
    return {k: {m: [float(r[m]) for r in rs] for m, _ in METRICS} for k, rs in fl.items()}


def plot_curves(rows, sde, path):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means, floors = _means(rows), _floors(rows)
    problems = [p for p in PROBLEMS if any(k[0] == p and k[1] == sde for k in means)]
    if not problems:
        return
    fig, axes = plt.subplots(len(problems), 3, figsize=(12.5, 2.9 * len(problems)), squeeze=False)
    handles = {}
    for i, prob in enumerate(problems):
        for j, (m, title) in enumerate(METRICS):
            ax = axes[i][j]
            fl = floors.get((prob, sde), {}).get(m)
            if fl:
                band = ax.axhspan(min(fl), max(fl), color="0.85", zorder=0)
                handles.setdefault("noise floor (two exact sets, 3 seeds)", band)
            for fam, meth, color in HEADLINE:
                pts = sorted((k[4], v) for k, v in means.items() if k[:4] == (prob, sde, fam, meth))
                if not pts:
                    continue
                xs = [v["nfe"] for _, v in pts]
                ys = [max(v[m][0], 1e-4) for _, v in pts]
                (line,) = ax.plot(xs, ys, color=color, lw=1.6, ms=5, **STYLE[fam])
                lo = [max(v[m][1], 1e-4) for _, v in pts]
                hi = [max(v[m][2], 1e-4) for _, v in pts]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0)
                handles.setdefault(meth if fam != "ours" else f"{meth} (ours)", line)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xticks(sorted({b for k in means for b in [k[4]]}), [str(b) for b in sorted({k[4] for k in means})])
            ax.grid(True, which="major", alpha=0.3)
            if i == 0:
                ax.set_title(title)
            if j == 0:
                ax.set_ylabel(f"{prob} ({sde.upper()})")
            if i == len(problems) - 1:
                ax.set_xlabel("score evaluations")
    fig.legend(list(handles.values()), list(handles.keys()), loc="center left", bbox_to_anchor=(0.995, 0.5),
               frameon=False, fontsize=9)
    fig.suptitle(f"Few-step sampling with the exact score, {sde.upper()}: mean of 3 seeds (shade: their range); "
                 "lower is better", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_heatmap(rows, path):
    """Every method: its error over the noise floor, log10, per problem x SDE x budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means, floors = _means(rows), _floors(rows)
    cols = sorted({(k[0], k[1], k[4]) for k in means},
                  key=lambda c: (list(PROBLEMS).index(c[0]), list(SDES).index(c[1]), c[2]))
    methods_ = []
    for k in means:
        if (k[2], k[3]) not in methods_:
            methods_.append((k[2], k[3]))
    order = ["ours", "ours-named", "ours-fitted", "k-diffusion", "diffusers"]
    methods_.sort(key=lambda fm: (order.index(fm[0]), fm[1]))
    fig, axes = plt.subplots(1, 3, figsize=(22, 0.32 * len(methods_) + 2.8), sharey=True)
    for ax, (m, title) in zip(axes, METRICS, strict=True):
        grid = torch.full((len(methods_), len(cols)), float("nan"))
        for i, (fam, meth) in enumerate(methods_):
            for j, (p, s, b) in enumerate(cols):
                v = means.get((p, s, fam, meth, b))
                fl = statistics.fmean(floors[(p, s)][m]) if (p, s) in floors else float("nan")
                if v is not None:
                    grid[i, j] = math.log10(max(v[m][0], 1e-6) / max(fl, 1e-6)) if math.isfinite(v[m][0]) else 99.0
        finite = grid[torch.isfinite(grid) & (grid < 99)]
        vmax = max(1.0, min(float(finite.max()) if finite.numel() else 1.0, 6.0))
        grid[grid >= 99] = vmax  # non-finite samples: the worst colour
        im = ax.imshow(grid.numpy(), cmap="YlOrRd", vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(cols)), [f"{p} {s.upper()} {b}" for p, s, b in cols], rotation=90, fontsize=7)
        ax.set_yticks(range(len(methods_)), [meth for _, meth in methods_], fontsize=8)
        ax.set_title(f"{title}\nlog10(error / noise floor): 0 = as good as exact samples", fontsize=10)
        for j in range(1, len(cols)):
            if cols[j][:2] != cols[j - 1][:2]:
                ax.axvline(j - 0.5, color="k", lw=0.8)
        for i in range(1, len(methods_)):
            if methods_[i][0] != methods_[i - 1][0]:
                ax.axhline(i - 0.5, color="k", lw=0.8)
        fig.colorbar(im, ax=ax, shrink=0.5, pad=0.02)
    fig.suptitle("Every method at every budget, mean of 3 seeds (blank: not run, see the notes in RESULTS.md; "
                 "darkest: also non-finite samples)", fontsize=11)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_all(rows, suffix):
    for sde in SDES:
        plot_curves(rows, sde, RESULTS / f"few_step_{sde}{suffix}.png")
    plot_heatmap(rows, RESULTS / f"few_step_heatmap{suffix}.png")


# ---- summary ---------------------------------------------------------------------------------
def summary(suffix):
    rows = list(csv.DictReader(open(RESULTS / f"few_step{suffix}.csv")))
    means, floors = _means(rows), _floors(rows)
    out = []
    budgets = sorted({k[4] for k in means})
    panels = sorted({(k[0], k[1]) for k in means}, key=lambda c: (list(PROBLEMS).index(c[0]), list(SDES).index(c[1])))
    out.append("Noise floors (an exact set of n against the reference; mean over 3 sets):\n")
    out.append("| problem | SDE | dispersion error | mode TV | sliced W2 |\n|---|---|---|---|---|")
    for p, s in panels:
        f = floors[(p, s)]
        out.append(f"| {p} | {s.upper()} | " + " | ".join(f"{statistics.fmean(f[m]):.4f}" for m, _ in METRICS) + " |")
    out.append("\nBest of ours against the best peer (k-diffusion, diffusers) at each budget, mean of 3 seeds; "
               "ratio = ours / peer (below 1: ours better). The best of many configurations (ours: about 17, peers: "
               "3 or 4) is picked after the fact, which flatters the side with more of them where the values sit "
               "near the noise floor (mode TV, sliced W2):\n")
    out.append("| problem | SDE | budget | metric | best of ours | best peer | ratio |\n|---|---|---|---|---|---|---|")
    for p, s in panels:
        for b in budgets:
            for m, title in METRICS:
                ours = [(v[m][0], k[3]) for k, v in means.items() if k[:2] == (p, s) and k[4] == b
                        and k[2].startswith("ours") and math.isfinite(v[m][0])]
                peer = [(v[m][0], k[3]) for k, v in means.items() if k[:2] == (p, s) and k[4] == b
                        and not k[2].startswith("ours") and math.isfinite(v[m][0])]
                if not ours or not peer:
                    continue
                o, q = min(ours), min(peer)
                out.append(f"| {p} | {s.upper()} | {b} | {title} | {o[0]:.4f} ({o[1]}) | {q[0]:.4f} ({q[1]}) | "
                           f"{o[0] / q[0]:.2f} |" if q[0] > 0 else "")
    pairs = [("ours", "dpm_solver"), ("k-diffusion", "k:dpmpp_2m"), ("diffusers", "d:DPMSolverMultistep"),
             ("diffusers", "d:EDMDPMSolverMultistep")]
    out.append("\nThe same algorithm, DPM-Solver++(2M), three ways: our `dpm_solver` with its defaults (log-SNR grid "
               "to eps, then the denoising step) / k-diffusion's `dpmpp_2m` (Karras grid) / diffusers' (VP: 1000-step "
               "discrete schedule, linspace timesteps; VE: EDM sigma space, Karras grid); mean of 3 seeds; each "
               "cell dispersion error / mode TV / sliced W2:\n")
    out.append("| problem | SDE | budget | ours | k-diffusion | diffusers | ours / k | ours / diffusers |\n"
               "|---|---|---|---|---|---|---|---|")
    for p, s in panels:
        for b in budgets:
            got = [means.get((p, s, fam, meth, b)) for fam, meth in pairs]
            d = got[2] or got[3]
            if got[0] is None:
                continue

            def cell(v):
                return " / ".join(f"{v[m][0]:.3g}" for m, _ in METRICS) if v else "-"

            def ratio(a, c):
                return " / ".join(f"{a[m][0] / c[m][0]:.2f}" if c[m][0] > 0 else "-" for m, _ in METRICS) if c else "-"

            out.append(f"| {p} | {s.upper()} | {b} | {cell(got[0])} | {cell(got[1])} | {cell(d)} | "
                       f"{ratio(got[0], got[1])} | {ratio(got[0], d)} |")
    out.append("\nEvery method: geometric mean over the problem x SDE panels it ran of (error / noise floor), "
               "per budget; cells: dispersion / mode TV / sliced W2 (1 = as good as exact samples; "
               "non-finite runs excluded and counted):\n")
    out.append("| family | method | " + " | ".join(f"NFE {b}" for b in budgets) + " | panels |\n|---|---|"
               + "---|" * (len(budgets) + 1))
    methods_ = sorted({(k[2], k[3]) for k in means},
                      key=lambda fm: (["ours", "ours-named", "ours-fitted", "k-diffusion", "diffusers"].index(fm[0]), fm[1]))
    for fam, meth in methods_:
        cells, npanels = [], set()
        for b in budgets:
            parts = []
            for m, _ in METRICS:
                logs, bad = [], 0
                for (p, s) in panels:
                    v = means.get((p, s, fam, meth, b))
                    if v is None:
                        continue
                    npanels.add((p, s))
                    if not math.isfinite(v[m][0]):
                        bad += 1
                        continue
                    logs.append(math.log(max(v[m][0], 1e-6) / max(statistics.fmean(floors[(p, s)][m]), 1e-6)))
                parts.append((f"{math.exp(statistics.fmean(logs)):.1f}" if logs else "-") + (f" ({bad} NaN)" if bad else ""))
            cells.append(" / ".join(parts))
        out.append(f"| {fam} | {meth} | " + " | ".join(cells) + f" | {len(npanels)} |")
    skipped = {}
    for r in rows:
        if r["status"] == "skipped":
            skipped.setdefault((r["family"], r["method"], r["note"]), set()).add(f"{r['problem']}/{r['sde']}")
    if skipped:
        out.append("\nSkipped:\n")
        for (fam, meth, note), where in sorted(skipped.items()):
            out.append(f"- {fam} `{meth}` ({len(where)} panels): {note}")
    path = RESULTS / f"few_step_overhead{suffix}.csv"
    if path.exists():
        over = list(csv.DictReader(open(path)))
        out.append("\nPer-evaluation overhead: wall time of the call over the time inside the score function "
                   "(median of the repeats; goal <= 1.10 on the exact oracle, <= 1.03 on the MLP):\n")
        out.append("| score | method | NFE | best wall s | wall / inside (median) | min | max |\n|---|---|---|---|---|---|---|")
        for r in over:
            out.append(f"| {r['oracle']} | {r['method']} | {r['nfe']} | {float(r['best_wall_s']):.4f} | "
                       f"{float(r['median_ratio']):.3f} | {float(r['min_ratio']):.3f} | {float(r['max_ratio']):.3f} |")
    return "\n".join(x for x in out if x is not None)


# ---- main --------------------------------------------------------------------------------------
def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: ring and mix16, VP and VE, n=300, one seed, NFE 5 and 10")
    p.add_argument("--n", type=int, default=2000, help="samples per run (default 2000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20], help="evaluation budgets (default 5 10 20)")
    p.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated, of {', '.join(PROBLEMS)}")
    p.add_argument("--sdes", default="vp,ve", help="comma-separated, of vp, ve")
    p.add_argument("--samplers", default="all", help="our samplers run with their defaults (default: all registered)")
    p.add_argument("--config", action="append", default=[], metavar="LABEL=SAMPLER:KEY=VALUE,...",
                   help="another named configuration of ours, e.g. 'unipc 3=unipc:order=3' (repeatable)")
    p.add_argument("--fit", default=FIT_DEFAULT, help=f"samplers to run on fitted grids (default {FIT_DEFAULT})")
    p.add_argument("--only", default=None, metavar="REGEX", help="run only the methods whose label matches")
    p.add_argument("--k-diffusion", default=None, metavar="PATH",
                   help=f"k-diffusion source: its sampling.py, a checkout or a bare git mirror (default $KDIFFUSION_SRC, "
                        f"else {KDIFF_DEFAULT} if it exists)")
    p.add_argument("--no-peers", action="store_true", help="skip k-diffusion and diffusers")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--overhead-nfe", type=int, nargs="+", default=[20, 100], help="NFE of the overhead runs")
    p.add_argument("--repeats", type=int, default=5, help="repeats of each overhead run (default 5)")
    p.add_argument("--no-overhead", action="store_true", help="skip the overhead part")
    p.add_argument("--overhead-only", action="store_true", help="only the overhead part")
    p.add_argument("--suffix", default=None, help="output name suffix (default '' ; '_quick' with --quick)")
    p.add_argument("--summary", action="store_true", help="print the markdown tables from the CSVs")
    p.add_argument("--plot", action="store_true", help="redraw the figures from the CSV")
    p.add_argument("-q", "--quiet", dest="verbose", action="store_false")
    args = p.parse_args(argv)
    suffix = args.suffix if args.suffix is not None else ("_quick" if args.quick else "")
    if args.summary:
        print(summary(suffix))
        return
    if args.plot:
        plot_all(list(csv.DictReader(open(RESULTS / f"few_step{suffix}.csv"))), suffix)
        return
    if args.quick:
        args.problems, args.n, args.seeds, args.nfe, args.repeats = "ring,mix16", 300, [0], [5, 10], 2
        args.overhead_nfe = [20]
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"few_step: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, samplers {ss.available_samplers()}", flush=True)
    if not args.overhead_only:
        rows, notes = [], []
        quality(args, rows, notes)
        write_csv(rows, RESULTS / f"few_step{suffix}.csv")
        plot_all(rows, suffix)
        for n in notes:
            print(n)
        print(f"quality part: {time.perf_counter() - start:.0f} s", flush=True)
    if not args.no_overhead:
        over = []
        overhead(args, over)
        write_csv(over, RESULTS / f"few_step_overhead{suffix}.csv")
    print(f"total {time.perf_counter() - start:.0f} s; results in {RESULTS}")


if __name__ == "__main__":
    main()
