"""The trained ring-mixture model of the trained-model tests, and the numbers they check.

Shared by the tests (tests/training/conftest.py trains it once per session) and by
benchmarks/trained_model_margins.py, which trains it over several seeds to measure the margin
each test has: a model's weights depend on float round-off (another CPU trains other weights,
much like another seed), so every bound on a trained model must hold over seeds, not for one run.
"""

from __future__ import annotations

import math

import torch

import scoresde as ss
from scoresde import metrics

RECIPE = dict(steps=4000, batch_size=512, lr=2e-3, warmup_steps=200, lr_schedule="cosine", min_lr_ratio=0.05,
              ema_decay=0.999, progress=False)

N = 4000  # samples per quality check

#: every bound the trained-model tests assert: quantity -> (bound, "max" for an upper bound, "min"
#: for a lower one). benchmarks/trained_model_margins.py measures each quantity over training seeds;
#: its range and the margin to these bounds are in benchmarks/RESULTS.md.
BOUNDS = {
    "score_rel_0.05": (0.15, "max"), "score_rel_0.2": (0.15, "max"),
    "score_rel_0.5": (0.06, "max"), "score_rel_0.9": (0.03, "max"),
    "nll_gap_likelihood": (0.10, "max"), "nll_gap_sigma2": (0.10, "max"),
    "bound_gap_likelihood": (0.10, "max"), "bound_paired_diff_4se": (-0.10, "max"),
    "em_sw_ratio": (1.6, "max"), "em_chi2_p": (1e-4, "min"), "em_dispersion_error": (0.22, "max"),
    "flow_sw_ratio": (1.5, "max"), "flow_chi2_p": (1e-4, "min"), "flow_dispersion_error": (0.25, "max"),
    "dpm_rms_over_exact": (2.0, "max"), "dpm_shift_minus_exact": (0.06, "max"),
    "ssm_rel_0.4": (0.4, "max"), "ssm_rel_0.7": (0.4, "max"),
}


def train_ring_mlp(weighting: str, seed: int = 0):
    """The recipe for the 2-D 8-component ring mixture under VP: MLP(2, 128, 3), eps
    parameterisation with data_std=4, 4000 AdamW steps of 512 (cosine decay), EMA 0.999 --
    about a minute of one CPU core. Returns (EMA model in float64, sde, gmm)."""
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture()
    data = ss.MixtureDataset(gmm, 20_000, seed=1)
    torch.manual_seed(seed)
    model = ss.ScoreModel(ss.MLP(2, 128, 3), sde, data_std=4.0)
    trainer = ss.Trainer(model, ss.DSMLoss(sde, weighting), data, None, seed=seed, **RECIPE)
    trainer.fit()
    return trainer.ema.model.double(), sde, gmm


class RingReference:
    """Six exact draws of the ring mixture: the spread between true sets and their dispersion."""

    def __init__(self, gmm):
        gen = torch.Generator().manual_seed(2024)
        self.gmm = gmm
        self.sets = [gmm.sample(N, generator=gen) for _ in range(6)]
        self.sw_ref = float(torch.stack([metrics.sliced_wasserstein(self.sets[i], self.sets[i + 3])
                                         for i in range(3)]).mean())
        self.dispersion = float(torch.stack([metrics.dispersion(s, gmm) for s in self.sets]).mean())

    def quality(self, x) -> dict[str, float]:
        """Sliced W2 to the true sets over their own spread, chi-square p of the mode
        occupancy, and the dispersion inside modes (1 for exact samples)."""
        sw = float(torch.stack([metrics.sliced_wasserstein(x, s) for s in self.sets]).mean())
        return dict(sw_ratio=sw / self.sw_ref, chi2_p=float(metrics.occupancy_chi2(x, self.gmm).p_value),
                    dispersion=float(metrics.dispersion(x, self.gmm)))


def sampler_error_on_flow(score_fn, sde, gmm, *, steps: int = 50, seed: int = 3) -> dict[str, float]:
    """DPM-Solver-2M's error on the probability flow of ``score_fn`` itself: its samples against the
    flow solved to rtol = atol = 1e-8 from the same prior draws. RMS distance per sample, and the
    dispersion the sampler adds to the flow's."""
    x_T = sde.prior_sample((N, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        flow = ss.decode(score_fn, sde, x_T, rtol=1e-8, atol=1e-8)
        dpm = ss.sample(score_fn, sde, (N, 2), x_start=x_T, sampler="dpm_solver", steps=steps, order=2,
                        denoise=False, dtype=torch.float64).x
    return dict(rms=float((dpm - flow).square().sum(1).mean().sqrt()),
                dispersion_shift=float(metrics.dispersion(dpm, gmm) - metrics.dispersion(flow, gmm)),
                flow_dispersion=float(metrics.dispersion(flow, gmm)))


def heldout_nll_gap(model, sde, gmm, n: int = 300) -> tuple[float, float]:
    """PF-ODE model NLL minus the true NLL on held-out points (exact trace, exact p_T as prior):
    mean and standard error, nats per point."""
    test = ss.MixtureDataset(gmm, n, seed=999, dtype=torch.float64)
    ll = ss.log_likelihood(model, sde, test.data, trace="exact", prior_log_prob=gmm.prior_log_prob(sde))
    gap = -ll.log_p + test.log_prob(test.data)
    return float(gap.mean()), float(gap.std()) / math.sqrt(n)


def heldout_bound_gaps(model, sde, gmm, n: int = 1000):
    """The reverse-SDE model's NLL bound minus the true NLL, per held-out point (same draws for every model)."""
    test = ss.MixtureDataset(gmm, n, seed=999, dtype=torch.float64)
    with torch.no_grad():
        bound = ss.nll_bound(model, sde, test.data, samples=256, prior_log_prob=gmm.prior_log_prob(sde),
                             generator=torch.Generator().manual_seed(4242))
    return bound.nll + test.log_prob(test.data)


def score_errors(model, sde, gmm, times=(0.05, 0.2, 0.5, 0.9)) -> dict[float, float]:
    """Relative L2 error ||s_theta - s*|| / ||s*|| over 4000 draws of p_t, per time."""
    errors = {}
    for t in times:
        x = gmm.sample(4000, generator=torch.Generator().manual_seed(1), t=t, sde=sde)
        tt = torch.full((4000,), t, dtype=torch.float64)
        with torch.no_grad():
            exact = gmm.score(x, tt, sde)
            errors[t] = float((model(x, tt) - exact).norm() / exact.norm())
    return errors


# ---- sliced score matching on an SDE without a closed-form kernel ---------------------------------
class CubicSDE(ss.SDE):
    """dx = -x^3/4 dt + dW: nonlinear drift, no closed-form transition kernel."""

    T = 1.0
    eps = 1e-3
    prior_std = 1.0

    def drift(self, x, t):
        return -0.25 * x**3

    def diffusion(self, x, t):
        return torch.ones_like(x)


def mc_reference_score(sde, x0, x, t, delta=0.05, dt=0.005, seed=0, chunk=25):
    r"""Monte-Carlo score of p_t at points x: simulate the N paths x0 to t - delta, then
    p_t(x) ~ mean_i N(x; m_i, g^2 delta) with the Euler one-step kernel m_i = y_i + f(y_i) delta,
    whose score is sum_i softmax_i (m_i - x) / (g^2 delta) (g = 1 here). Its noise per coordinate
    is about 1 / (delta sqrt(2 pi N p_t(x))), a few percent of the score for N = 2e5."""
    times = torch.tensor([0.0, t - delta], dtype=x0.dtype)
    y = ss.sde.torchsde_integrate(sde, x0, times, dt=dt, seed=seed)[-1]
    m = y + sde.drift(y, torch.tensor(t - delta)) * delta
    out = []
    for xc in x.split(chunk):
        w = torch.softmax(-0.5 * torch.cdist(xc, m).square() / delta, dim=1)
        out.append((w @ m - xc) / delta)
    return torch.cat(out)


def ssm_score_errors(seed: int = 0) -> dict[float, float]:
    """Train an MLP by sliced score matching on :class:`CubicSDE` (ring of radius 2, std 0.2; 1000
    steps) and return its relative L2 error against :func:`mc_reference_score` at t = 0.4 and 0.7."""
    sde = CubicSDE()
    gmm = ss.analytic.ring_mixture(radius=2.0, std=0.2)
    data = gmm.sample(20_000, generator=torch.Generator().manual_seed(0)).float()
    torch.manual_seed(seed)
    model = ss.ScoreModel(ss.MLP(2, 64, 2), sde, "score")
    loss = ss.SlicedScoreMatchingLoss(sde, n_times=16, t_min=0.3, dt=0.04)
    tr = ss.Trainer(model, loss, data, None, steps=1000, batch_size=512, lr=3e-3, warmup_steps=50,
                    lr_schedule="cosine", min_lr_ratio=0.05, ema_decay=0.99, seed=seed, progress=False)
    tr.fit()
    ema = tr.ema.model.double()
    x0 = gmm.sample(200_000, generator=torch.Generator().manual_seed(2))
    errors = {}
    for t in (0.4, 0.7):
        x = ss.sde.torchsde_integrate(sde, x0[:500], torch.tensor([0.0, t], dtype=torch.float64),
                                      dt=0.005, seed=5)[-1]
        ref = mc_reference_score(sde, x0, x, t)
        with torch.no_grad():
            pred = ema(x, torch.full((500,), t, dtype=torch.float64))
        errors[t] = float((pred - ref).norm() / ref.norm())
    return errors
