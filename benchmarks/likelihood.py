"""Likelihood benchmark: scoresde.log_likelihood vs k-diffusion's ``log_likelihood``.

Run from the repository root (k-diffusion is a benchmark-only dependency, never imported by
scoresde or its tests)::

    pip install --no-deps k-diffusion safetensors pillow
    python benchmarks/likelihood.py            # the comparison
    python benchmarks/likelihood.py --prior    # the prior-mismatch table of docs/likelihood.md

Same score, same model, same tolerances. k-diffusion works in the EDM/VE parameterisation: its
model is a denoiser ``D(x, sigma)`` and it integrates ``dx/dsigma = (x - D)/sigma`` from
``sigma_min`` to ``sigma_max`` with a N(0, sigma_max^2) prior. Under our VE SDE,
``sigma(t) = sigma_min (sigma_max/sigma_min)^t`` and the PF-ODE ``dx/dt = -1/2 g^2 s`` with
``g^2 = d sigma^2/dt`` is exactly ``dx/dsigma = -sigma s``, so the mapping is exact:
``D(x, sigma) = x + sigma^2 s(x, t(sigma))``, ``t(sigma) = log(sigma/sigma_min)/log(sigma_max/sigma_min)``,
integrated from ``sigma(eps)`` to ``sigma_max``. (For VP one would use ``x_hat = x/alpha_t``,
``sigma_hat = sigma_t/alpha_t`` and add the log-determinant ``D log alpha_t`` at both ends;
VE needs no such change, so the comparison uses VE.) k-diffusion has only a one-probe
Rademacher Hutchinson trace; ours runs exact and Hutchinson.

Accuracy is measured against a reference that no trace estimator enters: the mixture's exact
``log p_eps(x)`` plus the Gaussian prior's mismatch ``log N(z) - log p_T(z)`` at the latent ``z``
from a tight (1e-10) PF-ODE solve, i.e. the exact log-likelihood of the same model.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scoresde as ss  # noqa: E402


def load_kdiffusion_sampling():
    """Import ``k_diffusion.sampling`` without the package ``__init__`` (which pulls in training
    and image dependencies). Its ``utils`` module imports torchvision only for image helpers that
    the likelihood never calls, so an empty stand-in module is registered for that import."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise SystemExit("k-diffusion is not installed: pip install --no-deps k-diffusion safetensors pillow")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    if importlib.util.find_spec("torchvision") is None:
        tv, tr, tf = (types.ModuleType(n) for n in ("torchvision", "torchvision.transforms",
                                                     "torchvision.transforms.functional"))
        tv.transforms, tr.functional = tr, tf
        sys.modules.update({m.__name__: m for m in (tv, tr, tf)})
    import k_diffusion.sampling as ks

    return ks


def kdiff_denoiser(score_fn, sde: ss.LinearSDE):
    """Our score as a k-diffusion denoiser in the scaled variables x_hat = x / alpha_t,
    sigma_hat = sigma_t / alpha_t (EDM's form of any linear SDE; alpha = 1 and sigma_hat = sigma for
    VE): the PF-ODE becomes dx_hat/dsigma_hat = -sigma_hat s_hat with
    s_hat(x_hat) = alpha s(alpha x_hat, t), so D(x_hat, sigma_hat) = x_hat + sigma_hat^2 alpha s(alpha x_hat, t),
    t = t(sigma_hat) the inverse of sigma_hat(t) = exp(-log_snr(t))."""

    def model(x_hat, sigma_hat):
        # clamp: torchdiffeq's first step-size probe may look just past sigma_hat(T)
        t = sde.t_from_log_snr(-torch.log(sigma_hat)).clamp(0.0, sde.T)
        alpha = sde.marginal(t)[0].reshape(-1, *([1] * (x_hat.dim() - 1)))
        sig = sigma_hat.reshape(alpha.shape)
        return x_hat + sig**2 * alpha * score_fn(alpha * x_hat, t)

    return model


def timed_pair(fns, repeats):
    """Run the callables interleaved ``repeats`` times; return each one's fastest wall time and
    its last output. Interleaving and the minimum keep the ratio fair on a shared machine, where
    other jobs only ever add time."""
    best, outs = [math.inf] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


def compare(ks, sde_kind, dim, batch, traces, tol, repeats, seed=0):
    sde = ss.VESDE(sigma_min=0.01, sigma_max=50.0) if sde_kind == "VE" else ss.VPSDE()
    gmm = ss.analytic.ring_mixture() if dim == 2 else ss.analytic.random_mixture(dim=dim, n_components=8, seed=1)
    gmm = gmm.to(dtype=torch.float64)
    score = gmm.score_fn(sde)
    x = gmm.sample(batch, generator=torch.Generator().manual_seed(seed), t=sde.eps, sde=sde)
    f64 = dict(dtype=torch.float64)
    alpha_eps, sigma_eps = sde.marginal(torch.tensor(sde.eps, **f64))
    alpha_T, sigma_T = sde.marginal(torch.tensor(sde.T, **f64))
    sigma_hat_eps, sigma_hat_T = float(sigma_eps / alpha_eps), float(sigma_T / alpha_T)

    # References: the exact log-likelihood of each model, no trace estimator involved. Ours has
    # the prior N(0, prior_std^2); k-diffusion's N(0, sigma_hat_T^2) on x_hat_T, i.e. N(0, sigma_T^2)
    # on x_T (the same for VE; sigma_T^2 = 1 - alpha_T^2 instead of 1 for VP).
    z_ref = ss.encode(score, sde, x, rtol=1e-10, atol=1e-10)
    exact = gmm.log_prob(x, sde.eps, sde)
    log_pT = gmm.log_prob(z_ref, sde.T, sde)
    ref_ours = exact + sde.prior_log_prob(z_ref) - log_pT
    kd_prior = torch.distributions.Normal(0.0, float(sigma_T)).log_prob(z_ref).sum(1)
    ref_kd = exact + kd_prior - log_pT

    model = kdiff_denoiser(score, sde)

    def kd():
        torch.manual_seed(seed)  # k-diffusion draws its probe from the global RNG
        ll_hat, info = ks.log_likelihood(model, x / alpha_eps, sigma_hat_eps, sigma_hat_T, atol=tol, rtol=tol)
        # density of x = alpha_eps x_hat: log p(x) = log p_hat(x_hat) - D log alpha_eps
        return ll_hat - dim * torch.log(alpha_eps), info["fevals"]

    rows = []
    for trace in traces:
        def ours(trace=trace):
            return ss.log_likelihood(score, sde, x, trace=trace, rtol=tol, atol=tol,
                                     generator=torch.Generator().manual_seed(seed))

        ours()  # warm-up (first torch.func / autograd use)
        (our_time, kd_time), (res, (kd_ll, kd_nfe)) = timed_pair([ours, kd], repeats)
        rows.append(dict(
            sde=sde_kind, dim=dim, batch=batch, trace=trace, tol=tol,
            our_time=our_time, our_nfe=res.nfe, our_err=(res.log_p - ref_ours).abs().mean().item(),
            kd_time=kd_time, kd_nfe=kd_nfe, kd_err=(kd_ll - ref_kd).abs().mean().item(),
            mismatch=(ref_ours - exact).abs().mean().item(),
        ))
    return rows


def prior_mismatch_table(n_mc=2_000_000):
    """KL(p_T || prior) for each built-in SDE (default parameters) and three data sets: the
    mean error of log_likelihood with the default Gaussian prior is -KL (see docs/likelihood.md)."""
    sdes = {
        "VP (beta 0.1..20)": ss.VPSDE(),
        "VP cosine": ss.VPSDE(schedule="cosine"),
        "sub-VP (beta 0.1..20)": ss.SubVPSDE(),
        "VE (sigma 0.01..50)": ss.VESDE(),
        "VP, beta_max = 4 (not default)": ss.VPSDE(beta_max=4.0),
        "VE, sigma_max = 6 (not default)": ss.VESDE(sigma_max=6.0),
    }
    gen = torch.Generator().manual_seed(0)
    mixtures = {
        "ring, 2-D (radius 4)": ss.analytic.ring_mixture(),
        "random_mixture, 8-D": ss.analytic.random_mixture(dim=8, seed=0),
    }
    lines = ["| SDE | data | KL(p_T ‖ prior) nats (± MC s.e.) | bits/dim | per-sample std of the error |",
             "|---|---|---|---|---|"]
    for sname, sde in sdes.items():
        for dname, gmm in mixtures.items():
            z = gmm.sample(n_mc, generator=gen, t=sde.T, sde=sde)
            lr = gmm.log_prob(z, sde.T, sde) - sde.prior_log_prob(z)
            kl, se, sd = lr.mean().item(), lr.std().item() / math.sqrt(n_mc), lr.std().item()
            lines.append(f"| {sname} | {dname} | {kl:.3g} ± {se:.1g} | {kl / (gmm.dim * math.log(2)):.2g} | {sd:.3g} |")
        # Gaussian "image" data N(0, 0.5^2 I) on 32x32x3: KL in closed form
        D, s = 3072, 0.5
        alpha, sigma = sde.marginal(torch.tensor(sde.T, dtype=torch.float64))
        v = (alpha * s) ** 2 + sigma**2
        tau2 = sde.prior_std**2
        kl = 0.5 * D * (v / tau2 - 1 - torch.log(v / tau2)).item()
        lines.append(f"| {sname} | N(0, 0.5²), 3072-D (closed form) | {kl:.3g} | {kl / (D * math.log(2)):.2g} | {math.sqrt(D / 2) * abs(v / tau2 - 1).item():.3g} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", action="store_true", help="print the prior-mismatch table only")
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.prior:
        print(prior_mismatch_table())
        return
    ks = load_kdiffusion_sampling()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"device: {cpu}, torch {torch.__version__}, 1 thread; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"float64, rtol = atol = {args.tol:g}, fastest of {args.repeats} interleaved runs; VE sigma 0.01..50, VP beta 0.1..20\n")
    rows = []
    for kind in ("VE", "VP"):
        rows += compare(ks, kind, 2, 512, ["exact", "hutchinson"], args.tol, args.repeats)
        rows += compare(ks, kind, 64, 64, ["exact", "hutchinson"], args.tol, args.repeats)
        rows += compare(ks, kind, 784, 32, ["hutchinson"], args.tol, args.repeats)
    print("| SDE | D | batch | ours: trace | ours: time s | ours: NFE | ours: mean abs err (nats) "
          "| k-diff (Hutchinson): time s | NFE | mean abs err | time ratio k-diff/ours | NFE ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sde']} | {r['dim']} | {r['batch']} | {r['trace']} | {r['our_time']:.3f} | {r['our_nfe']} | {r['our_err']:.2e} "
              f"| {r['kd_time']:.3f} | {r['kd_nfe']} | {r['kd_err']:.2e} | {r['kd_time'] / r['our_time']:.2f} "
              f"| {r['kd_nfe'] / r['our_nfe']:.2f} |")
    print("\n(prior mismatch |log N(z) - log p_T(z)|, common to both, mean over the batch: "
          + ", ".join(f"{r['sde']} {r['dim']}-D {r['mismatch']:.1e}" for r in rows if r['trace'] == 'hutchinson')
          + " nats; errors above are against each model's own exact log-likelihood)")


if __name__ == "__main__":
    main()
