"""Samplers against exact first and second moments, where a wrong noise scale, a missing drift
term or a wrong variance factor cannot hide.

* A plain :class:`ss.SDE` (no marginals): the Ornstein-Uhlenbeck process written by hand, started
  from its exact p_T (non-zero mean), sampled by every sampler that serves it.
* A state-dependent diffusion with a known stationary law N(0, 1), so the exact score is -x at
  every t and the reverse process must stay at N(0, 1): the divergence term of the reverse drift
  is what keeps it there.
* Samplers whose every step is affine in x when the data are Gaussian (ancestral, Heun with
  churn): the exact mean and variance of their output are propagated step by step in closed form,
  written out here independently of the sampler's code, and the Monte-Carlo moments must match
  them tightly; the propagated moments must also approach the true data law at the method's order.

Monte-Carlo tolerances: with n scalars of variance v the sample mean has standard error
sqrt(v/n) and the sample variance about v sqrt(2/n); we allow 4 standard errors plus, where the
comparison is with the continuous law, the solver's discretisation bias stated at each test.
"""

import math

import pytest
import torch

import scoresde as ss

F64 = torch.float64


def assert_moments(x: torch.Tensor, mean: float, var: float, *, mean_bias: float = 0.0, var_bias: float = 0.0,
                   what: str = ""):
    """Sample mean within 4 s.e. + ``mean_bias``; sample variance within 4 s.e. + ``var_bias`` (relative)."""
    x = x.double().flatten()
    n = x.numel()
    m, v = float(x.mean()), float(x.var())
    tol_m = 4 * math.sqrt(var / n) + mean_bias
    tol_v = 4 * math.sqrt(2 / n) + var_bias
    msg = f"{what}: mean {m:.5f} vs {mean:.5f} (tol {tol_m:.4f}), var {v:.5f} vs {var:.5f} (rel err {v / var - 1:+.4f}, tol {tol_v:.4f})"
    assert abs(m - mean) <= tol_m, msg
    assert abs(v / var - 1) <= tol_v, msg


# ---- a plain SDE subclass with closed-form marginals known to the test only ------------------
class HandwrittenOU(ss.SDE):
    r"""dx = -theta x dt + s dW from data N(m0, v0): p_t = N(m0 e^{-theta t}, v0 e^{-2 theta t} + s^2/(2 theta) (1 - e^{-2 theta t})).

    A plain SDE (not a LinearSDE), so samplers see drift and diffusion only; its prior is the
    exact p_T, with a non-zero mean, through prior_sample / prior_log_prob.
    """

    eps = 1e-3

    def __init__(self, theta=1.0, s=2.0**0.5, m0=2.0, v0=0.25):
        self.theta, self.s, self.m0, self.v0 = theta, s, m0, v0

    def drift(self, x, t):
        return -self.theta * x

    def diffusion(self, x, t):
        return torch.full_like(x, self.s)

    def moments(self, t):
        e = torch.exp(-self.theta * torch.as_tensor(t, dtype=F64))
        return self.m0 * e, self.v0 * e**2 + self.s**2 / (2 * self.theta) * (1 - e**2)

    def score(self, x, t):
        m, v = self.moments(t)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return (-(x - m.reshape(shape).to(x)) / v.reshape(shape).to(x))

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        m, v = self.moments(self.T)
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype or torch.get_default_dtype())
        return float(m) + math.sqrt(float(v)) * z

    def prior_log_prob(self, z):
        m, v = (float(a) for a in self.moments(self.T))
        return (-0.5 * (z - m).square() / v - 0.5 * math.log(2 * math.pi * v)).flatten(1).sum(1)


OU_STEPS = 400
# Euler-Maruyama's weak error on this process, from propagating its affine step exactly: the mean
# is off by -0.22 h and the variance by +3.8 h (relative) at eps = 1e-3. Every stochastic sampler
# here is weak order 1 with a comparable constant; we allow twice that.
OU_MEAN_BIAS, OU_VAR_BIAS = 0.5 / OU_STEPS, 8.0 / OU_STEPS

OU_SAMPLERS = [
    ("euler_maruyama", dict(steps=OU_STEPS), True),
    ("reverse_diffusion", dict(steps=OU_STEPS), True),
    ("pc", dict(steps=OU_STEPS, predictor="reverse_diffusion"), True),
    ("pc", dict(steps=OU_STEPS, predictor="euler_maruyama", snr=0.16), True),
    ("ode", dict(), False),  # dopri5 at rtol = atol = 1e-5: no bias to speak of
    ("ode", dict(method="rk4", steps=50), False),
    ("torchsde", dict(steps=OU_STEPS), True),
    pytest.param("torchsde", dict(steps=OU_STEPS, method="srk"), True, marks=pytest.mark.slow),  # ~5 s
]


@pytest.mark.parametrize("name,opts,biased", OU_SAMPLERS, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_plain_sde_samplers_reach_the_closed_form_law(name, opts, biased):
    sde = HandwrittenOU()
    res = ss.sample(sde.score, sde, (20000, 2), sampler=name, seed=3, dtype=F64, **opts)
    assert res.x.dtype == F64 and res.x.grad_fn is None
    m, v = (float(a) for a in sde.moments(sde.eps))
    assert_moments(res.x, m, v, mean_bias=OU_MEAN_BIAS if biased else 0.0, var_bias=OU_VAR_BIAS if biased else 1e-3,
                   what=f"{name} {opts}")


# ---- a state-dependent diffusion with stationary law N(0, 1) ---------------------------------
class CubicSDE(ss.SDE):
    r"""dx = (x/2 - x^3/2) dt + sqrt(1 + x^2) dW: its Fokker-Planck flux f p - 1/2 d(g^2 p)/dx vanishes
    for p = N(0, 1), so from N(0, 1) it stays there, and the exact score is -x at every t."""

    prior_std = 1.0
    state_dependent_diffusion = True
    eps = 1e-3

    def drift(self, x, t):
        return 0.5 * x - 0.5 * x**3

    def diffusion(self, x, t):
        return (1 + x.square()).sqrt()


CUBIC_STEPS = 400
# Measured once with 5 x 10^4 to 10^6 scalars at 400 steps, the variance's error: Euler-Maruyama and
# reverse diffusion -0.1%, pc +0.4% (its Langevin step widens by about snr^2), torchsde -0.3%,
# dopri5 within its Monte-Carlo error (0.6%). Reverse diffusion without the divergence term gave 0.32.
# Allowance 1.5%.
CUBIC_VAR_BIAS = 0.015

CUBIC_SAMPLERS = [
    ("euler_maruyama", dict(steps=CUBIC_STEPS), CUBIC_VAR_BIAS),
    ("reverse_diffusion", dict(steps=CUBIC_STEPS), CUBIC_VAR_BIAS),
    ("pc", dict(steps=CUBIC_STEPS), CUBIC_VAR_BIAS),
    ("pc", dict(steps=CUBIC_STEPS, predictor="euler_maruyama"), CUBIC_VAR_BIAS),
    # Langevin alone, at the batch-mean step 2 snr^2 / mean(x^2): it widens N(0, 1) by about snr^2
    # (2.6%), and the batch-dependent step makes the widening vary by about 1.5% between seeds
    ("pc", dict(steps=CUBIC_STEPS, predictor="none", snr=0.16), CUBIC_VAR_BIAS + 0.16**2),
    ("ode", dict(), CUBIC_VAR_BIAS),
    ("torchsde", dict(steps=CUBIC_STEPS), CUBIC_VAR_BIAS),
    ("torchsde", dict(steps=CUBIC_STEPS, method="milstein"), CUBIC_VAR_BIAS),
]


@pytest.mark.parametrize("name,opts,var_bias", CUBIC_SAMPLERS, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_state_dependent_diffusion_keeps_its_stationary_law(name, opts, var_bias):
    sde = CubicSDE()
    res = ss.sample(lambda x, t: -x, sde, (20000, 1), sampler=name, seed=4, dtype=F64, **opts)
    assert res.x.grad_fn is None and not res.x.requires_grad  # no graph, though the divergence used autograd
    assert_moments(res.x, 0.0, 1.0, mean_bias=0.01, var_bias=var_bias, what=f"{name} {opts}")


# ---- affine samplers on Gaussian data: moments propagated step by step ------------------------
M, V = 0.5, 0.09  # data N(M, V) in every coordinate
SMIN, SMAX = 0.01, 10.0


def ve_sigma(t):
    """VE's noise level, written out: sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    return SMIN * (SMAX / SMIN) ** t


def ve_score(x, t):
    """Exact score of p_t = N(M, V + sigma(t)^2) under VE."""
    s2 = ve_sigma(t.to(F64)).square().to(x.dtype)[:, None]
    return -(x - M) / (V + s2)


def exact_start(n: int, seed: int) -> torch.Tensor:
    """x_T from the exact p_T = N(M, V + sigma_max^2)."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return M + math.sqrt(V + SMAX**2) * z


def ancestral_posterior_moments(times: list[float]) -> tuple[float, float]:
    """Mean and variance after ancestral steps with the posterior variance on VE (alpha = 1):

    x_s = x + (s_t^2 - s_s^2) score(x, t) + sqrt((s_t^2 - s_s^2) s_s^2 / s_t^2) z,

    affine in x for the Gaussian score, so mean' = A mean + B and var' = A^2 var + noise variance.
    """
    mean, var = M, V + ve_sigma(times[0]) ** 2
    for t, s in zip(times[:-1], times[1:], strict=True):
        st2, ss2 = ve_sigma(t) ** 2, ve_sigma(s) ** 2
        dv = st2 - ss2
        A, B = 1 - dv / (V + st2), M * dv / (V + st2)
        mean, var = A * mean + B, A * A * var + dv * ss2 / st2
    return mean, var


@pytest.mark.parametrize("steps", [25, 50])
def test_ancestral_posterior_variance_on_ve_matches_propagated_moments(steps):
    sde = ss.VESDE(SMIN, SMAX)
    res = ss.sample(ve_score, sde, (20000, 2), sampler="ancestral", variance="posterior", steps=steps,
                    x_start=exact_start(20000, 5), seed=6, denoise=False)
    times = res.times.double().tolist()
    mean, var = ancestral_posterior_moments(times)
    assert_moments(res.x, mean, var, what=f"ancestral posterior, {steps} steps")  # no bias: the same chain
    # the chain itself tends to the data law N(M, V + sigma_eps^2) at weak order 1: the posterior
    # variance is exact for a point mass and too small otherwise (-23% at 25 steps, -13% at 50 here)
    true_var = V + ve_sigma(times[-1]) ** 2
    err = var / true_var - 1
    err2 = ancestral_posterior_moments(torch.linspace(times[0], times[-1], 2 * steps + 1, dtype=F64).tolist())[1]
    err2 = err2 / true_var - 1
    assert abs(mean - M) < 1e-12
    assert -0.25 < err < 0 and 1.7 < err / err2 < 2.1, (err, err2)  # halves with the step: order 1


def heun_churn_moments(times: list[float], churn: float, s_noise: float = 1.0) -> tuple[float, float]:
    """Mean and variance after Karras et al.'s Heun steps with churn on VE (Algorithm 2).

    On VE the scaled state is x itself and the level is sigma. Each step raises the level to
    sig_hat = min(sig (1 + gamma), sig_0) with gamma = min(churn / N, sqrt(2) - 1), adds noise of
    variance s_noise^2 (sig_hat^2 - sig^2), then takes a Heun step of the ODE dx/dsig = k(sig) (x - M),
    k(sig) = sig / (V + sig^2), for Gaussian data, from sig_hat to the next level:
    x - M <- A (x - M) with A = 1 + D/2 (k(sig_hat) + k(sig') + D k(sig_hat) k(sig')), D = sig' - sig_hat.
    """
    n = len(times) - 1
    gamma = min(churn / n, math.sqrt(2) - 1)
    sig = [ve_sigma(t) for t in times]
    mean, var = M, V + sig[0] ** 2
    for i in range(n):
        s_hat = min(sig[i] * (1 + gamma), sig[0])
        var += s_noise**2 * (s_hat**2 - sig[i] ** 2)
        k0, k1 = s_hat / (V + s_hat**2), sig[i + 1] / (V + sig[i + 1] ** 2)
        D = sig[i + 1] - s_hat
        A = 1 + D / 2 * (k0 + k1 + D * k0 * k1)
        mean, var = M + A * (mean - M), A * A * var
    return mean, var


def test_heun_churn_above_its_cap_matches_propagated_moments():
    """churn / N = 1.6 > sqrt(2) - 1: gamma must be capped (uncapped, the output variance is 11% higher)."""
    sde = ss.VESDE(SMIN, SMAX)
    steps, churn = 25, 40.0
    res = ss.sample(ve_score, sde, (20000, 2), sampler="heun", churn=churn, steps=steps,
                    x_start=exact_start(20000, 7), seed=8, denoise=False)
    times = res.times.double().tolist()
    mean, var = heun_churn_moments(times, churn)
    assert_moments(res.x, mean, var, what="heun churn=40, 25 steps")
    # against the data law: churn raises each step's span, so at 25 steps the variance is 7.6% high;
    # the error falls at least as fast as first order with more steps (Heun is second order without churn)
    true_var = V + ve_sigma(times[-1]) ** 2
    edm = ss.sampling.time_grid(sde, 2 * steps, times[0], times[-1], "edm").tolist()
    err, err2 = var / true_var - 1, heun_churn_moments(edm, churn)[1] / true_var - 1
    assert abs(mean - M) < 1e-12
    assert 0 < err < 0.1 and err / err2 > 1.8, (err, err2)


# ---- the Langevin corrector at a fixed noise level ---------------------------------------------
class PlainOU(ss.SDE):
    """dx = -x dt + sqrt(2) dW, stationary N(0, 1), as a plain SDE (its Langevin step has no sigma_t)."""

    prior_std = 1.0

    def drift(self, x, t):
        return -x

    def diffusion(self, x, t):
        return torch.full_like(x, math.sqrt(2.0))


def _gaussian_at(sde, t):
    """(mean, var) of p_t for data N(M, V), and its score."""
    if isinstance(sde, ss.LinearSDEBase):
        def moments(t):
            a, s = sde.marginal(t)
            return a * M, a**2 * V + s**2
    else:
        def moments(t):
            e = torch.exp(-t)
            return e * M, e**2 * V + 1 - e**2

    def score(x, t):
        m, v = moments(t)
        return -(x - m[:, None]) / v[:, None]

    m, v = moments(torch.tensor(t, dtype=F64))
    return float(m), float(v), score


LANGEVIN_SDES = {
    "vp": lambda: ss.VPSDE(),
    "ve": lambda: ss.VESDE(0.01, 5.0),
    "linear": lambda: ss.LinearSDE(lambda t: -2 * t, lambda t: (1 + 3 * t).sqrt()),
    "plain": PlainOU,
}


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("kind", list(LANGEVIN_SDES))
def test_langevin_corrector_keeps_p_t_in_low_dimension(kind, dim):
    """200 corrector-only steps at (nearly) fixed t = 0.1 from the exact p_t must stay at p_t.

    A step of the same size for every sample widens the law by at most about snr^2 = 2.6%;
    the per-sample step 2 snr^2 D / ||s(x)||^2 widened it by 56% (VP, 1-D) and diverged on a plain SDE.
    """
    sde = LANGEVIN_SDES[kind]()
    snr, n = 0.16, 40000 // dim
    grid = torch.linspace(0.1, 0.0999, 201, dtype=F64)
    m, v, score = _gaussian_at(sde, 0.1)
    x0 = m + math.sqrt(v) * torch.randn(n, dim, generator=torch.Generator().manual_seed(9), dtype=F64)
    res = ss.sample(score, sde, (n, dim), sampler="pc", predictor="none", snr=snr, grid=grid, x_start=x0,
                    seed=10, denoise=False)
    m_end, v_end, _ = _gaussian_at(sde, 0.0999)
    assert_moments(res.x, m_end, v_end, mean_bias=0.01 * math.sqrt(v_end), var_bias=snr**2, what=f"{kind} {dim}-D")
