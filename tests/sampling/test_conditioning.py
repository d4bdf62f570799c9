"""Conditional sampling checked against closed-form Gaussian conditionals and posteriors."""

import pytest
import torch
from sampling_helpers import GaussianTarget

import scoresde as ss

SDE = ss.VPSDE()


def _correlated_target():
    cov = torch.tensor([[1.0, 0.8, 0.3, 0.0],
                        [0.8, 1.0, 0.5, 0.2],
                        [0.3, 0.5, 1.0, -0.4],
                        [0.0, 0.2, -0.4, 0.8]], dtype=torch.float64)
    return GaussianTarget(SDE, torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64), cov)


def _conditional(target, known_idx, y):
    unk = [i for i in range(target.dim) if i not in known_idx]
    S, m = target.cov, target.mean
    Skk, Suk, Suu = S[known_idx][:, known_idx], S[unk][:, known_idx], S[unk][:, unk]
    gain = Suk @ torch.linalg.inv(Skk)
    return unk, m[unk] + gain @ (y - m[known_idx]), Suu - gain @ Suk.T


def _check_moments(x, mean, cov, n):
    """Mean within 4 standard errors; covariance entries within 4 standard errors (Wishart)."""
    se_mean = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() <= 4 * se_mean).all()), (x.mean(0), mean)
    emp = torch.cov(x.T)
    se_cov = ((cov.square() + cov.diagonal()[:, None] * cov.diagonal()[None, :]) / n).sqrt()
    assert bool(((emp - cov).abs() <= 4 * se_cov).all()), (emp, cov)


@pytest.mark.parametrize("sampler,opts", [("euler_maruyama", dict(steps=200)), ("dpm_solver", dict(steps=30))])
def test_inpainting_reproduces_the_exact_gaussian_conditional(sampler, opts):
    target = _correlated_target()
    known_idx = [0, 3]
    y = torch.tensor([1.2, 1.5], dtype=torch.float64)
    n = 4000
    mask = torch.zeros(4, dtype=torch.bool)
    mask[known_idx] = True
    known = torch.zeros(4, dtype=torch.float64)
    known[known_idx] = y
    res = ss.sample(target.score, SDE, (n, 4), sampler=sampler, seed=0, dtype=torch.float64,
                    mask=mask, known=known, inpaint="tweedie", **opts)
    assert torch.equal(res.x[:, known_idx], y.expand(n, 2))
    unk, mean, cov = _conditional(target, known_idx, y)
    _check_moments(res.x[:, unk], mean, cov, n)


def test_replacement_inpainting_keeps_known_values_and_runs():
    target = _correlated_target()
    mask = torch.tensor([True, False, False, True])
    known = torch.tensor([1.2, 0.0, 0.0, 1.5], dtype=torch.float64)
    res = ss.sample(target.score, SDE, (200, 4), sampler="euler_maruyama", steps=200, seed=0,
                    dtype=torch.float64, mask=mask, known=known)
    assert torch.equal(res.x[:, [0, 3]], known[[0, 3]].expand(200, 2))
    # replacement is an approximation: the unknown part is at least pulled the right way
    unk, mean, _ = _conditional(target, [0, 3], known[[0, 3]])
    prior_mean = target.mean[unk]
    assert float((res.x[:, unk].mean(0) - mean).norm()) < float((prior_mean - mean).norm())


def test_classifier_guidance_gives_the_exact_posterior():
    """Guidance by the exact log p_t(y | x_t) of a noisy observation y = x0 + n (n ~ N(0, r^2 I))."""
    target = _correlated_target()
    r2 = 0.3
    y = torch.tensor([1.0, 0.0, -0.5, 1.0], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)

    def log_lik(x, t):
        # x0 | x_t is Gaussian: mean m + K (x_t - a m), cov S - K a S with K = a S C_t^{-1}
        a, _ = SDE.marginal(t)
        a = a[:, None, None]
        S, m = target.cov, target.mean
        Ct = target.cov_t(t)
        K = a * S @ torch.linalg.inv(Ct)
        post_mean = m + (K @ (x - a[:, :, 0] * m)[..., None])[..., 0]
        post_cov = S - K @ (a * S) + r2 * eye
        diff = y - post_mean
        return -0.5 * (diff[:, None, :] @ torch.linalg.solve(post_cov, diff[..., None]))[:, 0, 0] \
            - 0.5 * torch.logdet(post_cov)

    guided = ss.classifier_guidance(target.score, log_lik, scale=1.0)
    n = 4000
    res = ss.sample(guided, SDE, (n, 4), sampler="dpm_solver", steps=30, seed=1, dtype=torch.float64)
    S, m = target.cov, target.mean
    gain = S @ torch.linalg.inv(S + r2 * eye)
    _check_moments(res.x, m + gain @ (y - m), S - gain @ S, n)


def test_classifier_free_guidance_combines_scores():
    g1 = ss.analytic.ring_mixture()
    g2 = ss.analytic.GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), 1.0)
    s_c, s_u = g1.score_fn(SDE), g2.score_fn(SDE)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    for w in [0.0, 1.0, 2.5]:
        torch.testing.assert_close(ss.classifier_free_guidance(s_c, s_u, w)(x, t), s_u(x, t) + w * (s_c(x, t) - s_u(x, t)))
    # scale 1 samples the conditional model exactly as its own score does
    a = ss.sample(ss.classifier_free_guidance(s_c, s_u, 1.0), SDE, (8, 2), steps=20, seed=0, dtype=torch.float64)
    b = ss.sample(s_c, SDE, (8, 2), steps=20, seed=0, dtype=torch.float64)
    torch.testing.assert_close(a.x, b.x)


def test_sdedit_from_target_samples_keeps_the_target():
    """Data from p_0 noised to t_start and denoised by the exact score stay distributed as p_0."""
    target = _correlated_target()
    n = 4000
    x0 = target.sample_t(n, 0.0, torch.Generator().manual_seed(3))
    res = ss.sample(target.score, SDE, (n, 4), sampler="euler_maruyama", steps=300, x_init=x0, t_start=0.5, seed=2)
    _check_moments(res.x, target.mean, target.cov, n)
