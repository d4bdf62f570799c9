"""Trained score networks against reference scores.

* DSM on the VP SDE: an MLP trained on the 2-D ring mixture is compared with the exact
  mixture score gmm.score (relative L2 error over samples of p_t, bounds stated below).
* SSM on a custom nonlinear SDE: an MLP trained by sliced score matching on x_t simulated with
  torchsde is compared with a Monte-Carlo reference score.
"""

import pytest
import torch

import scoresde as ss


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
def test_dsm_trained_mlp_matches_exact_mixture_score(ring_models):
    ema, sde, gmm = ring_models("likelihood")  # the recipe in conftest.py
    # Stated bounds on ||s_theta - s*|| / ||s*|| over 4000 draws of p_t; measured on this recipe:
    # 0.082 (t=0.05), 0.081 (0.2), 0.030 (0.5), 0.012 (0.9). An untrained network scores 1.0.
    bounds = {0.05: 0.15, 0.2: 0.15, 0.5: 0.06, 0.9: 0.03}
    errors = {}
    for t in bounds:
        x = gmm.sample(4000, generator=torch.Generator().manual_seed(1), t=t, sde=sde)
        tt = torch.full((4000,), t, dtype=torch.float64)
        with torch.no_grad():
            errors[t] = rel_l2(ema(x, tt), gmm.score(x, tt, sde))
    assert all(errors[t] < b for t, b in bounds.items()), f"relative L2 errors {errors}, bounds {bounds}"


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


@pytest.mark.slow
def test_mc_reference_recovers_exact_score_for_a_linear_sde():
    """The Monte-Carlo reference used below, checked where the exact answer is known (VP, mixture)."""
    sde = ss.VPSDE(beta_min=1.0, beta_max=1.0)  # g = 1 like CubicSDE, linear drift -x/2
    gmm = ss.analytic.ring_mixture(radius=2.0, std=0.2)
    x0 = gmm.sample(200_000, generator=torch.Generator().manual_seed(0))
    for t in (0.4, 0.7):
        x = gmm.sample(500, generator=torch.Generator().manual_seed(1), t=t, sde=sde)
        ref = mc_reference_score(sde, x0, x, t)
        assert rel_l2(ref, gmm.score(x, t, sde)) < 0.08  # measured 0.056 at both times


@pytest.mark.slow
def test_sliced_score_matching_learns_custom_nonlinear_sde_score():
    sde = CubicSDE()
    gmm = ss.analytic.ring_mixture(radius=2.0, std=0.2)
    data = gmm.sample(20_000, generator=torch.Generator().manual_seed(0)).float()
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 64, 2), sde, "score")
    loss = ss.SlicedScoreMatchingLoss(sde, n_times=16, t_min=0.3, dt=0.04)
    tr = ss.Trainer(model, loss, data, None, steps=1000, batch_size=512, lr=3e-3, warmup_steps=50,
                    lr_schedule="cosine", min_lr_ratio=0.05, ema_decay=0.99, progress=False)
    tr.fit()
    ema = tr.ema.model.double()
    x0 = gmm.sample(200_000, generator=torch.Generator().manual_seed(2))
    errors = {}
    for t in (0.4, 0.7):
        x = ss.sde.torchsde_integrate(sde, x0[:500], torch.tensor([0.0, t], dtype=torch.float64),
                                      dt=0.005, seed=5)[-1]
        ref = mc_reference_score(sde, x0, x, t)
        with torch.no_grad():
            errors[t] = rel_l2(ema(x, torch.full((500,), t, dtype=torch.float64)), ref)
    # bound 0.3: measured 0.24 and 0.22; the reference itself is within ~6% (test above), and the
    # untrained network (zero output) has error 1.0
    assert all(e < 0.3 for e in errors.values()), f"relative L2 errors vs Monte-Carlo reference: {errors}"
