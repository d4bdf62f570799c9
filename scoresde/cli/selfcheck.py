"""``scoresde selfcheck``: the SDE library against exact answers (closed-form vs numerical
marginals, torchsde simulation vs the marginals, the mixture's score vs autograd)."""

from __future__ import annotations

import argparse
import time

import torch

from .. import __version__
from ..analytic import ring_mixture
from ..errors import check_int, check_seed
from ..sde import VESDE, VPSDE, LinearSDE, SubVPSDE, torchsde_integrate


def _self_check(seed: int, paths: int) -> list[tuple[str, str, float, float]]:
    """Rows of (SDE, check, measured error, tolerance)."""
    f64 = torch.float64
    sdes = {
        "VP (linear)": VPSDE(),
        "VP (cosine)": VPSDE(schedule="cosine"),
        "sub-VP": SubVPSDE(),
        "VE": VESDE(0.01, 10.0),
    }
    rows = []
    t = torch.linspace(1e-5, 1.0, 2001, dtype=f64)
    gmm = ring_mixture()
    x0 = torch.tensor([[1.0, -2.0]], dtype=f64)
    for name, sde in sdes.items():
        numeric = LinearSDE(sde.f, sde.g, sigma0=getattr(sde, "sigma0", 0.0))
        (a, s), (a_n, s_n) = sde.marginal(t), numeric.marginal(t)
        err = max(float(((a_n - a) / a).abs().max()), float(((s_n - s) / s).abs().max()))
        rows.append((name, "closed form vs numerical marginals (rel.)", err, 1e-6))

        start = x0.expand(paths, 2) + float(sde.marginal(0.0)[1]) * torch.randn(
            paths, 2, dtype=f64, generator=torch.Generator().manual_seed(seed)
        )
        xt = torchsde_integrate(sde, start, [0.0, 0.5], dt=2e-3, seed=seed)[-1]
        mean, std = sde.marginal_prob(x0, 0.5)
        z = float(((xt.mean(0) - mean[0]) / (std / paths**0.5)).abs().max())
        rows.append((name, "torchsde simulation: mean error in std. errors", z, 4.0))

        x = 3 * torch.randn(64, 2, dtype=f64, generator=torch.Generator().manual_seed(seed))
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(gmm.log_prob(x, 0.3, sde).sum(), x)
        err = float((gmm.score(x.detach(), 0.3, sde) - grad).abs().max())
        rows.append((name, "mixture score vs autograd of log p_t", err, 1e-9))
    return rows


def run(args: argparse.Namespace) -> int:
    check_int("--paths", args.paths, 1)
    check_seed("--seed", args.seed)
    print(f"scoresde {__version__}: self-check of the SDE library against exact answers")
    start = time.perf_counter()
    rows = _self_check(args.seed, args.paths)
    width = max(len(r[0]) for r in rows)
    print(f"{'SDE':<{width}}  {'check':<48} {'error':>10} {'tol':>8}  ok")
    failed = 0
    for name, check, err, tol in rows:
        ok = err <= tol
        failed += not ok
        print(f"{name:<{width}}  {check:<48} {err:>10.2e} {tol:>8.0e}  {'yes' if ok else 'NO'}")
    print(f"\n{len(rows) - failed}/{len(rows)} checks passed in {time.perf_counter() - start:.1f} s")
    return 0 if failed == 0 else 1
