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


# ---- class-conditional sampling against the analytic mixture -----------------------------------
# A mixture whose components are grouped into classes has exact class-conditional scores:
# p_t(x | y) is the mixture of class y's components (weights renormalised) diffused to t, and the
# exact classifier p_t(y | x) sums their responsibilities. Each sampler below starts from the
# target's exact p_T (no prior mismatch) and runs the PF-ODE at rtol = atol = 1e-5 (or the reverse
# SDE where said), so the samples' errors are Monte-Carlo noise; every moment is checked to 4
# standard errors of 4000 samples.
F64 = torch.float64
N = 4000


def _mixture(means, stds, weights=None):
    return ss.analytic.GaussianMixture(torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64),
                                       None if weights is None else torch.tensor(weights, dtype=F64))


def _sub(gmm, comps):
    """The mixture of components ``comps`` of ``gmm``, weights renormalised: p(x | class)."""
    idx = torch.tensor(comps)
    return ss.analytic.GaussianMixture(gmm.means[idx], gmm.stds[idx], gmm.weights[idx])


class ClassMixture:
    """``gmm`` with classes = groups of its components: exact conditional scores and classifier."""

    def __init__(self, gmm, classes):
        self.gmm, self.classes = gmm, classes
        self.parts = [_sub(gmm, c) for c in classes]
        self.num_classes = len(classes)

    def score_fn(self, sde):
        def score(x, t, y=None):  # the contract: score_fn(x, t, y=labels), y=None unconditional
            if y is None:
                return self.gmm.score(x, t, sde)
            every = torch.stack([p.score(x, t, sde) for p in self.parts])  # (classes, batch, D)
            return every.gather(0, y[None, :, None].expand(1, *x.shape))[0]
        score.num_classes = self.num_classes
        return score

    def log_classifier(self, sde, y):
        """The exact log p_t(y | x): log of the summed responsibilities of class y's components."""
        def log_lik(x, t):
            log_r = torch.log_softmax(self.gmm.component_log_prob(x, t, sde), -1)
            mask = torch.full((self.num_classes, self.gmm.n_components), -torch.inf, dtype=x.dtype)
            for k, comps in enumerate(self.classes):
                mask[k, comps] = 0.0
            return torch.logsumexp(log_r + mask[y], -1)
        return log_lik


def _start(target, seed=0):
    return target.sample(N, t=SDE.T, sde=SDE, generator=torch.Generator().manual_seed(seed))


def _check_mixture(x, target, *, k=4.0):
    """Mean and covariance of ``x`` against the exact ones of ``target``, within k standard errors
    (of the mean: from the exact covariance; of each covariance entry: from the samples' 4th moments)."""
    n = x.shape[0]
    mean, cov = target.mean(), target.covariance()
    assert bool(((x.mean(0) - mean).abs() <= k * (cov.diagonal() / n).sqrt()).all()), (x.mean(0), mean)
    c = x - mean
    prods = c[:, :, None] * c[:, None, :]
    se = prods.std(0) / n**0.5
    assert bool(((prods.mean(0) - cov).abs() <= k * se).all()), (prods.mean(0), cov)


# 2-D: six components, three classes of two
CLASSES = ClassMixture(_mixture([[-3.0, 0.0], [-1.5, 2.5], [1.5, 2.5], [3.0, 0.0], [1.5, -2.5], [-1.5, -2.5]],
                                [0.6, 0.8, 0.5, 0.7, 0.9, 0.6], [1, 2, 3, 1, 2, 3]),
                       [[0, 1], [2, 3], [4, 5]])


@pytest.mark.parametrize("label", [0, 2])
def test_cfg_at_weight_one_samples_the_exact_class_conditional(label):
    """sample(cond=y, guidance=1) with the exact p_t(x | y) reproduces p_0(x | y) (PF-ODE)."""
    target = CLASSES.parts[label]
    x = ss.sample(CLASSES.score_fn(SDE), SDE, (N, 2), sampler="ode", x_start=_start(target), cond=label,
                  guidance=1.0, dtype=F64, denoise=False).x
    _check_mixture(x, target)


def test_cfg_at_weight_zero_samples_the_unconditional_mixture():
    x = ss.sample(CLASSES.score_fn(SDE), SDE, (N, 2), sampler="euler_maruyama", steps=500, seed=1,
                  x_start=_start(CLASSES.gmm, 1), cond=torch.full((N,), 2), guidance=0.0, dtype=F64).x
    _check_mixture(x, CLASSES.gmm)


def test_cfg_weights_combine_the_conditional_and_unconditional_scores():
    score = CLASSES.score_fn(SDE)
    x = torch.randn(7, 2, dtype=F64)
    t = torch.full((7,), 0.4, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    s_u, s_c = score(x, t), score(x, t, y=y)
    for w in (0.0, 1.0, 3.0):
        torch.testing.assert_close(ss.sampling.conditional_score(score, y, w)(x, t), s_u + w * (s_c - s_u))
    # and the two-function form gives the same
    torch.testing.assert_close(ss.classifier_free_guidance(lambda x_, t_: score(x_, t_, y=y), score, 3.0)(x, t),
                               s_u + 3.0 * (s_c - s_u))


def test_classifier_guidance_with_the_exact_classifier_samples_the_class_conditional():
    """s(x) + grad log p_t(y | x) (exact) is the exact conditional score: reverse SDE lands on p_0(x | y)."""
    label = 1
    y = torch.full((N,), label)
    guided = ss.classifier_guidance(CLASSES.gmm.score_fn(SDE), CLASSES.log_classifier(SDE, y), scale=1.0)
    t = torch.full((N,), 0.3, dtype=F64)
    x_t = CLASSES.gmm.sample(N, t=0.3, sde=SDE, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(guided(x_t, t), CLASSES.parts[label].score(x_t, t, SDE))  # the identity itself
    x = ss.sample(guided, SDE, (N, 2), sampler="ode", x_start=_start(CLASSES.parts[label], 2), dtype=F64,
                  denoise=False).x
    _check_mixture(x, CLASSES.parts[label])


def _tilted(gmm, theta):
    r"""The exponential tilt :math:`p(x)e^{\theta^\top x}/Z` of a diagonal mixture: component means move by
    :math:`s_k^2\theta`, weights are multiplied by :math:`e^{\theta^\top\mu_k + \frac12\sum_d s_{kd}^2\theta_d^2}`."""
    s2 = gmm.stds.square()
    log_w = gmm.weights.log() + gmm.means @ theta + 0.5 * (s2 * theta.square()).sum(-1)
    return ss.analytic.GaussianMixture(gmm.means + s2 * theta, gmm.stds, torch.softmax(log_w, 0))


def test_classifier_guidance_with_the_exact_tilt_likelihood_samples_the_tilted_mixture():
    r"""Guidance by :math:`\log E[e^{\theta^\top x_0} \mid x_t] = \log\tilde p_t(x) - \log p_t(x) + c` samples the
    tilted distribution :math:`p_0(x)\,e^{\theta^\top x}/Z` exactly (the tilt is a 'classifier' whose
    likelihood is known at every noise level)."""
    theta = torch.tensor([0.6, -0.3], dtype=F64)
    tilted = _tilted(CLASSES.gmm, theta)

    def log_lik(x, t):
        return tilted.log_prob(x, t, SDE) - CLASSES.gmm.log_prob(x, t, SDE)

    guided = ss.classifier_guidance(CLASSES.gmm.score_fn(SDE), log_lik, scale=1.0)
    x = ss.sample(guided, SDE, (N, 2), sampler="ode", x_start=_start(tilted, 3), dtype=F64, denoise=False).x
    _check_mixture(x, tilted)
    assert float((x.mean(0) - CLASSES.gmm.mean()).norm()) > 1.0  # the tilt moved it: the check can fail


# ---- composition ---------------------------------------------------------------------------------
# Exact case: x = (x1, x2) with independent coordinates, x1 from a 3-component mixture and x2 from a
# 2-component one (the 2-D mixture is their product, 6 components). Condition y1 in {0, 1, 2} names
# x1's component, y2 in {3, 4} x2's. Given x_t the two are independent at every t (the noise is
# independent per coordinate), so s + (s(.|y1) - s) + (s(.|y2) - s) is the exact score of p_t(x | y1, y2),
# the single component (y1, y2).
A_MEANS, A_STDS, A_W = [-3.0, 0.5, 3.0], [0.6, 0.9, 0.5], [0.2, 0.5, 0.3]
B_MEANS, B_STDS, B_W = [-1.5, 2.0], [0.7, 0.4], [0.6, 0.4]
GRID = _mixture([[a, b] for a in A_MEANS for b in B_MEANS], [[sa, sb] for sa in A_STDS for sb in B_STDS],
                [wa * wb for wa in A_W for wb in B_W])
GRID_CLASSES = ClassMixture(GRID, [[2 * i, 2 * i + 1] for i in range(3)] + [[j, 2 + j, 4 + j] for j in range(2)])


def test_composing_conditions_on_independent_coordinates_is_the_exact_score():
    score = GRID_CLASSES.score_fn(SDE)
    y = torch.tensor([[0, 3], [1, 4], [2, 3], [2, 4]]).repeat(5, 1)  # (20, 2): two conditions per sample
    x = torch.randn(20, 2, dtype=F64) * 3
    for tt in (1e-3, 0.1, 0.5, 0.9):
        t = torch.full((20,), tt, dtype=F64)
        composed = ss.sampling.conditional_score(score, y, 1.0)(x, t)
        # component (i, j) of the grid is number 2 i + j, with j = y2 - 3
        exact = torch.stack([_sub(GRID, [2 * int(y[i, 0]) + int(y[i, 1]) - 3]).score(x[i:i + 1], t[:1], SDE)[0]
                             for i in range(20)])
        torch.testing.assert_close(composed, exact, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sampler,opts", [("ode", {}),
                                          pytest.param("euler_maruyama", dict(steps=500, seed=5), marks=pytest.mark.slow)])
def test_sampling_two_composed_conditions_gives_the_exact_joint_conditional(sampler, opts):
    target = _sub(GRID, [2 * 1 + 1])  # y1 = 1 (x1's middle component), y2 = 4 (x2's second)
    x = ss.sample(GRID_CLASSES.score_fn(SDE), SDE, (N, 2), sampler=sampler, x_start=_start(target, 7),
                  cond=torch.tensor([[1, 4]]).expand(N, 2), dtype=F64, denoise=sampler != "ode", **opts).x
    _check_mixture(x, target)


def _product(g1, g2):
    r"""The normalised product :math:`p_1 p_2 / Z` of two diagonal mixtures: a mixture of :math:`K_1 K_2`
    components, :math:`\mathcal N(\mu_i; m_j, s_i^2 + r_j^2)`-weighted (the exact 'product of models')."""
    v1, v2 = g1.stds.square()[:, None], g2.stds.square()[None]
    m1, m2 = g1.means[:, None], g2.means[None]
    s = v1 + v2
    log_w = (g1.weights.log()[:, None] + g2.weights.log()[None]
             - 0.5 * ((m1 - m2).square() / s + torch.log(2 * torch.pi * s)).sum(-1))
    k = g1.n_components * g2.n_components
    return ss.analytic.GaussianMixture(((m1 * v2 + m2 * v1) / s).reshape(k, -1), (v1 * v2 / s).sqrt().reshape(k, -1),
                                       torch.softmax(log_w.reshape(-1), 0))


def _diffused(g, t):
    a, s = SDE.marginal(torch.tensor(t, dtype=F64))
    return ss.analytic.GaussianMixture(a * g.means, (a**2 * g.stds**2 + s**2).sqrt(), g.weights)


def test_a_product_of_two_mixtures_by_summed_scores_is_not_exact():
    """The product of models p1 p2 by s1 + s2 (compose_scores): exact at t = 0, not a diffusion's score at
    t > 0 (the diffusion of a product is not the product of diffusions). Measured here, from the exact
    p1_T p2_T: the PF-ODE collapses (covariance trace 0.05 against 3.29; it contracts like x_T alpha_T
    for two unit Gaussians), the reverse SDE lands near the product (mean off by 0.16 = 6 standard
    errors, covariance trace 2.87, component-weight TV 0.047 against 0.021 for exact samples)."""
    g1 = _mixture([[-2.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [0.5, 0.5]])
    g2 = _mixture([[-1.0, 1.0], [1.5, -1.0]], [[0.7, 0.7], [1.2, 1.2]])
    exact = _product(g1, g2)
    composed = ss.sampling.compose_scores([g1.score_fn(SDE), g2.score_fn(SDE)])
    x_e = torch.randn(9, 2, dtype=F64)
    torch.testing.assert_close(composed(x_e, torch.full((9,), SDE.eps, dtype=F64)),
                               exact.score(x_e, torch.full((9,), SDE.eps, dtype=F64), SDE), rtol=1e-4, atol=1e-4)
    assert float((composed(x_e, torch.full((9,), 0.5, dtype=F64)) - exact.score(x_e, 0.5, SDE)).abs().max()) > 0.1
    x_T = _product(_diffused(g1, 1.0), _diffused(g2, 1.0)).sample(N, generator=torch.Generator().manual_seed(0))
    ode = ss.sample(composed, SDE, (N, 2), sampler="ode", x_start=x_T, dtype=F64, denoise=False).x
    sde = ss.sample(composed, SDE, (N, 2), sampler="euler_maruyama", steps=1000, seed=3, x_start=x_T, dtype=F64,
                    denoise=False).x
    true_trace = float(exact.covariance().trace())
    assert abs(true_trace - 3.29) < 0.01
    assert float(torch.cov(ode.T).trace()) < 0.1 * true_trace  # measured 0.055
    se = (exact.covariance().diagonal() / N).sqrt()
    assert 4 < float(((sde.mean(0) - exact.mean()).abs() / se).max()) < 12  # measured 6.0
    assert 0.75 < float(torch.cov(sde.T).trace()) / true_trace < 0.95  # measured 0.87
    assert float(ss.metrics.mode_weight_tv(sde, exact)) < 0.1  # measured 0.047 (exact samples: 0.021)


def test_cond_and_guidance_errors_name_them():
    score = CLASSES.score_fn(SDE)
    with pytest.raises(ss.ArgumentError, match="guidance needs cond="):
        ss.sample(score, SDE, (4, 2), steps=2, guidance=2.0)
    with pytest.raises(ss.ArgumentError, match=r"cond must hold class labels in \[0, 2\], got 3"):
        ss.sample(score, SDE, (4, 2), steps=2, cond=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ss.ArgumentError, match="cond must hold class labels .* got -1"):
        ss.sample(score, SDE, (4, 2), steps=2, cond=-1)
    with pytest.raises(ss.ArgumentError, match=r"cond must be a class label, or labels of shape \(4,\)"):
        ss.sample(score, SDE, (4, 2), steps=2, cond=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ss.ArgumentError, match="cond must be an integer tensor"):
        ss.sample(score, SDE, (4, 2), steps=2, cond=torch.zeros(4))
    with pytest.raises(ss.ArgumentError, match="guidance must be a finite number"):
        ss.sample(score, SDE, (4, 2), steps=2, cond=1, guidance=float("nan"))
    with pytest.raises(ss.ArgumentError, match=r"cond: score_fn must take class labels as score_fn\(x, t, y=labels\)"):
        ss.sample(CLASSES.gmm.score_fn(SDE), SDE, (4, 2), steps=2, cond=1)
    unconditional = ss.ScoreModel(ss.MLP(2, 8, 1), SDE)
    with pytest.raises(ss.ArgumentError, match=r"cond: score_fn \(ScoreModel\) is an unconditional model"):
        ss.sample(unconditional, SDE, (4, 2), steps=2, cond=1, guidance=3.0)
    with pytest.raises(ss.ArgumentError, match="score_fns must be a non-empty sequence"):
        ss.sampling.compose_scores([])
    with pytest.raises(ss.ArgumentError, match="weights must be 2 numbers"):
        ss.sampling.compose_scores([score, score], weights=[1.0])
