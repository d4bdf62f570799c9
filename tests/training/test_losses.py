"""DSM and SSM losses checked against exact identities for the analytic mixture.

Explicit-score-matching identity: for any score model s and the true score s*,
L(s) - L(s*) = 1/2 E lambda(t) ||s - s*||^2. With s = s* + c for a constant vector c this is
1/2 ||c||^2 E[lambda(t)] exactly, which pins down both the objective and its weighting:
  sigma2 (t uniform):           1/2 ||c||^2 (1/(T-eps)) int sigma_t^2 dt
  likelihood (any t sampling):  1/2 ||c||^2 int g(t)^2 dt            (= B(T) - B(eps) for VP)
"""

import math

import pytest
import torch
from scipy import integrate, stats

import scoresde as ss
from scoresde.training import DSMLoss, SlicedScoreMatchingLoss

C = torch.tensor([0.7, -0.4], dtype=torch.float64)


class Shifted:
    """The exact score plus a constant: no .eps, so the loss uses -sigma * score."""

    def __init__(self, gmm, sde, c):
        self.gmm, self.sde, self.c = gmm, sde, c

    def __call__(self, x, t):
        return self.gmm.score(x, t, self.sde) + self.c


@pytest.mark.parametrize(
    "weighting,importance", [("sigma2", False), ("likelihood", True), ("likelihood", False)]
)
def test_dsm_excess_loss_matches_explicit_score_matching(weighting, importance):
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture()
    loss = DSMLoss(sde, weighting, importance_sampling=importance, eps=1e-3)
    x0 = gmm.sample(200_000, generator=torch.Generator().manual_seed(0))
    exact = loss(Shifted(gmm, sde, 0 * C), x0, torch.Generator().manual_seed(1))
    shifted = loss(Shifted(gmm, sde, C), x0, torch.Generator().manual_seed(1))  # same t and noise
    diff = shifted - exact
    if weighting == "sigma2":
        lam_mean = integrate.quad(lambda t: float(sde.marginal(t)[1]) ** 2, 1e-3, 1)[0] / (1 - 1e-3)
    else:
        lam_mean = float(sde.integrated_beta(1.0) - sde.integrated_beta(1e-3))
    want = 0.5 * float(C.square().sum()) * lam_mean
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert abs(float(diff.mean()) - want) < 4 * se + 1e-3 * want, (float(diff.mean()), want, se)


def test_importance_sampled_times_follow_g2_over_sigma2():
    sde = ss.VPSDE()
    loss = DSMLoss(sde, "likelihood", importance_sampling=True)
    t, w = loss.sample_t(20_000, torch.zeros(1, dtype=torch.float64), torch.Generator().manual_seed(0))
    lam_eps, lam_T = (float(v) for v in sde.log_snr(torch.tensor([sde.eps, 1.0], dtype=torch.float64)))

    def cdf(s):  # q(t) ~ g^2/sigma^2 = -2 dlambda/dt
        lam = sde.log_snr(torch.as_tensor(s, dtype=torch.float64)).numpy()
        return (lam_eps - lam) / (lam_eps - lam_T)

    assert stats.kstest(t.numpy(), cdf).pvalue > 1e-3
    torch.testing.assert_close(w, torch.full_like(w, 2 * (lam_eps - lam_T)))
    assert float(t.min()) >= sde.eps and float(t.max()) <= 1.0


def test_importance_sampling_has_lower_variance_than_uniform_times():
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture()
    x0 = gmm.sample(20_000, generator=torch.Generator().manual_seed(0))
    model = Shifted(gmm, sde, 0.3 * C)
    a = DSMLoss(sde, "likelihood", importance_sampling=True)(model, x0, torch.Generator().manual_seed(2))
    b = DSMLoss(sde, "likelihood", importance_sampling=False)(model, x0, torch.Generator().manual_seed(2))
    assert abs(float(a.mean() - b.mean())) < 4 * math.hypot(a.std(), b.std()) / math.sqrt(2e4)
    assert float(a.var()) < 0.2 * float(b.var())


def test_dsm_uses_the_model_eps_method_and_checks_inputs():
    sde = ss.VPSDE()
    model = ss.ScoreModel(ss.MLP(2, 8, 1), sde)
    loss = DSMLoss(sde)
    out = loss(model, torch.randn(16, 2), torch.Generator().manual_seed(0))
    assert out.shape == (16,) and torch.isfinite(out).all()

    class Custom(ss.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return torch.ones_like(x)

    with pytest.raises(ValueError, match="LinearSDE"):
        DSMLoss(Custom())
    with pytest.raises(ValueError, match="weighting"):
        DSMLoss(sde, "uniform")
    with pytest.raises(ValueError, match="eps"):
        DSMLoss(sde, eps=2.0)
    with pytest.raises(ValueError, match="x0"):
        loss(model, torch.randint(0, 3, (4, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        loss(model, torch.zeros(0, 2))


@pytest.mark.slow
def test_sliced_score_matching_on_simulated_vp_matches_fisher_information():
    """With the exact score, the SSM objective is -1/2 E||s*||^2 (integration by parts); adding a
    constant c adds 1/2||c||^2. x_t comes from simulating the VP SDE with torchsde (Euler, dt=0.01;
    beta_max=5 keeps beta*dt <= 0.05, so the scheme's variance bias stays near 1%)."""
    sde = ss.VPSDE(beta_max=5.0)
    gmm = ss.analytic.ring_mixture()
    loss = SlicedScoreMatchingLoss(sde, n_times=4, t_min=0.1, dt=0.01)
    x0 = gmm.sample(20_000, generator=torch.Generator().manual_seed(0))
    exact = loss(Shifted(gmm, sde, 0 * C), x0, torch.Generator().manual_seed(3)).detach()
    shifted = loss(Shifted(gmm, sde, C), x0, torch.Generator().manual_seed(3)).detach()
    fisher = []
    for t in torch.linspace(0.1, 1.0, 4, dtype=torch.float64):
        xt = gmm.sample(100_000, generator=torch.Generator().manual_seed(4), t=float(t), sde=sde)
        fisher.append(float(gmm.score(xt, t, sde).square().sum(1).mean()))
    want = -0.5 * sum(fisher) / len(fisher)
    se = float(exact.std()) / math.sqrt(exact.numel())
    assert abs(float(exact.mean()) - want) < 4 * se + 0.03 * abs(want), (float(exact.mean()), want, se)
    diff = shifted - exact
    assert abs(float(diff.mean()) - 0.5 * float(C.square().sum())) < 4 * float(diff.std()) / math.sqrt(2e4)


def test_ssm_argument_errors():
    sde = ss.VPSDE()
    with pytest.raises(ValueError, match="n_times"):
        SlicedScoreMatchingLoss(sde, n_times=1)
    with pytest.raises(ValueError, match="t_min"):
        SlicedScoreMatchingLoss(sde, t_min=1.5)
    with pytest.raises(ValueError, match="n_projections"):
        SlicedScoreMatchingLoss(sde, n_projections=0)
    with pytest.raises(ValueError, match="sde"):
        SlicedScoreMatchingLoss("vp")
