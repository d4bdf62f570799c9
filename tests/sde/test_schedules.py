"""VP schedules: closed forms against their definitions, the truncations, user schedules and their errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as ss
from scoresde.models.specs import build_sde, sde_spec
from scoresde.sde.linear_base import time_derivative

F64 = torch.float64
TIMES = torch.cat([torch.logspace(-5, -2, 100, dtype=F64), torch.linspace(1e-5, 1.0, 2001, dtype=F64)]).sort().values


def schedules():
    return {
        "linear": ss.VPSDE(),
        "scaled_linear": ss.VPSDE(schedule="scaled_linear"),
        "cosine": ss.VPSDE(schedule="cosine"),
        "sigmoid": ss.VPSDE(schedule="sigmoid"),
        "sigmoid_chen": ss.VPSDE(schedule="sigmoid", sigmoid_start=0.0, sigmoid_end=3.0, sigmoid_tau=0.7),
        "shifted_cosine": ss.VPSDE(schedule="shifted_cosine", shift=0.25),
        "alpha_bar": ss.VPSDE(alpha_bar=lambda t: torch.exp(-(0.1 * t + 9.95 * t**2))),
        "log_snr": ss.VPSDE(log_snr=lambda t: -torch.log(torch.tan(1.4 * t))),
    }


SCHEDULES = schedules()


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_closed_forms_agree_with_their_definitions(name):
    sde = SCHEDULES[name]
    t = TIMES
    B, beta = sde.integrated_beta(t), sde.beta(t)
    torch.testing.assert_close(beta, time_derivative(sde.integrated_beta, t, "B"), rtol=1e-12, atol=1e-13)
    alpha, sigma = sde.marginal(t)
    torch.testing.assert_close(alpha, torch.exp(-0.5 * B), rtol=1e-12, atol=0)
    assert (alpha.square() + sigma.square() - 1).abs().max() < 1e-14
    torch.testing.assert_close(sde.log_snr(t), alpha.log() - sigma.log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sde.f(t), -0.5 * beta, rtol=0, atol=0)
    torch.testing.assert_close(sde.g(t), beta.sqrt(), rtol=0, atol=0)
    assert float(sde.integrated_beta(0.0)) == pytest.approx(0.0, abs=1e-15)  # t = 0 is the data
    assert bool((beta >= 0).all()) and bool((alpha[1:] <= alpha[:-1]).all())
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(schedule="sigmoid", log_snr_end=-2.5),
                                    dict(schedule="shifted_cosine", shift=2.0, log_snr_end=-2.5),
                                    dict(schedule="scaled_linear")])
def test_closed_forms_match_the_numeric_linear_sde_of_their_coefficients(kwargs):
    sde = ss.VPSDE(**kwargs)
    numeric = ss.LinearSDE(sde.f, sde.g)
    (a, s), (a_n, s_n) = sde.marginal(TIMES), numeric.marginal(TIMES)
    assert ((a_n - a) / a).abs().max() < 1e-9 and ((s_n - s) / s).abs().max() < 1e-9


def test_sigmoid_is_chens_gamma_on_a_truncated_clock():
    start, end, tau = -3.0, 3.0, 1.1
    sde = ss.VPSDE(schedule="sigmoid", sigmoid_start=start, sigmoid_end=end, sigmoid_tau=tau, log_snr_end=-6.0)
    assert float(sde.log_snr(1.0)) == pytest.approx(-6.0, abs=1e-9)
    c = sde._schedule._c  # the truncation: Chen's gamma at c t
    assert 0.99 < c < 1

    def gamma(t):  # Chen 2023, Algorithm 1 (without the clip)
        v_start, v_end = 1 / (1 + math.exp(-start / tau)), 1 / (1 + math.exp(-end / tau))
        return (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)

    t = torch.linspace(0, 1, 101, dtype=F64)
    alpha, _ = sde.marginal(t)
    torch.testing.assert_close(alpha.square(), gamma(c * t), rtol=1e-7, atol=1e-12)  # gamma cancels near 1


def test_shifted_cosine_is_hoogeboom_s_shift_of_the_cosine_log_snr():
    plain = ss.VPSDE(schedule="shifted_cosine", log_snr_end=-7.5)
    shifted = ss.VPSDE(schedule="shifted_cosine", shift=64 / 256, log_snr_end=-7.5 + math.log(64 / 256))
    t = torch.linspace(1e-4, 1, 500, dtype=F64)
    # plain: alpha = cos(phi t), sigma = sin(phi t)
    phi1 = math.atan(math.exp(7.5))
    torch.testing.assert_close(plain.marginal(t)[0], torch.cos(phi1 * t), rtol=1e-12, atol=1e-15)
    # log(alpha^2 / sigma^2) shifted by 2 log(64/256) at every t; scoresde's lambda is half of it
    torch.testing.assert_close(shifted.log_snr(t) - plain.log_snr(t), torch.full_like(t, math.log(0.25)), rtol=0, atol=1e-12)
    assert float(shifted.log_snr(1.0)) == pytest.approx(-7.5 + math.log(0.25))
    assert ss.VPSDE(schedule="shifted_cosine", shift=0.5).log_snr_end == pytest.approx(-7.5 + math.log(0.5))


@pytest.mark.parametrize("schedule, n", [("linear", 1000), ("scaled_linear", 1000)])
def test_continuous_schedules_are_the_limit_of_diffusers_discrete_ones(schedule, n):
    diffusers = pytest.importorskip("diffusers")
    betas = dict(beta_start=0.00085, beta_end=0.012) if schedule == "scaled_linear" else {}  # Stable Diffusion's
    abar = diffusers.DDPMScheduler(num_train_timesteps=n, beta_schedule=schedule, **betas).alphas_cumprod.double()
    sde = ss.VPSDE(schedule=schedule) if schedule == "scaled_linear" else ss.VPSDE(0.1, 20.0)
    alpha, _ = sde.marginal(torch.arange(1, n + 1, dtype=F64) / n)
    # sum of -log(1 - beta_k) against the integral of beta: O(beta_k) relative
    assert (alpha.square() - abar).abs().max() < 2e-3


def test_the_built_in_numbers_are_unchanged():
    # linear and cosine as before the schedules module (values recorded from the closed forms)
    vp, cos = ss.VPSDE(), ss.VPSDE(schedule="cosine")
    assert float(vp.integrated_beta(1.0)) == pytest.approx(10.05, rel=1e-15)
    assert float(cos.log_snr(1.0)) == pytest.approx(-4.777640469375089, rel=1e-12)
    # the spec every run recorded so far, key order included (a resumed run compares it)
    assert list(vp.spec().items()) == [("beta_min", 0.1), ("beta_max", 20.0), ("schedule", "linear"),
                                       ("cosine_s", 0.008), ("cosine_end", 0.9946), ("eps", 1e-5)]
    assert cos.spec() == {**vp.spec(), "schedule": "cosine"}
    assert repr(vp) == "VPSDE(beta_min=0.1, beta_max=20)"
    assert repr(cos) == "VPSDE(schedule='cosine', cosine_s=0.008, cosine_end=0.9946)"
    # an older spec that records every option still loads
    old = {"beta_min": 0.1, "beta_max": 20.0, "schedule": "cosine", "cosine_s": 0.008, "cosine_end": 0.9946, "eps": 1e-5}
    assert build_sde({"name": "VPSDE", "kwargs": old}).spec() == cos.spec()


@pytest.mark.parametrize("name", ["scaled_linear", "sigmoid", "sigmoid_chen", "shifted_cosine"])
def test_built_in_schedules_rebuild_from_their_spec(name):
    sde = SCHEDULES[name]
    again = build_sde(sde_spec(sde))
    assert type(again) is ss.VPSDE and again.spec() == sde.spec() and repr(again) == repr(sde)
    torch.testing.assert_close(again.marginal(TIMES), sde.marginal(TIMES), rtol=0, atol=0)


def test_a_user_schedule_has_no_spec_and_is_recorded_as_custom():
    sde = SCHEDULES["alpha_bar"]
    assert sde.spec() is None and "custom" in sde_spec(sde)


def test_a_user_alpha_bar_reproduces_the_built_in_it_writes():
    vp = ss.VPSDE()
    mine = SCHEDULES["alpha_bar"]
    t = TIMES
    for a, b in zip(mine.marginal(t), vp.marginal(t), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=0)  # sigma from 1 - alpha_bar near t = 0
    torch.testing.assert_close(mine.g(t), vp.g(t), rtol=1e-12, atol=0)
    with torch.no_grad():  # autograd is switched on for beta even under no_grad
        torch.testing.assert_close(mine.f(t), vp.f(t), rtol=1e-12, atol=0)
    # the generic inverse against the closed one
    torch.testing.assert_close(mine.t_from_log_snr(vp.log_snr(t)), t, rtol=0, atol=1e-11)


@settings(max_examples=30, deadline=None)
@given(
    schedule=st.sampled_from(["linear", "scaled_linear", "cosine", "sigmoid", "shifted_cosine"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    log_snr_end=st.floats(-12.0, -1.0),
    shift=st.floats(0.1, 4.0),
)
def test_every_schedule_is_a_valid_vp_process(schedule, dtype, log_snr_end, shift):
    kw = {"sigmoid": dict(log_snr_end=log_snr_end), "shifted_cosine": dict(shift=shift, log_snr_end=log_snr_end)}
    sde = ss.VPSDE(schedule=schedule, **kw.get(schedule, {}))
    t = torch.linspace(sde.eps, 1.0, 300, dtype=dtype)
    alpha, sigma = sde.marginal(t)
    beta = sde.beta(t)
    assert alpha.dtype == dtype and bool(torch.isfinite(beta).all()) and bool((beta >= 0).all())
    assert bool((alpha[1:] <= alpha[:-1]).all()) and bool((sigma[1:] >= sigma[:-1]).all())
    tol = 2e-6 if dtype == torch.float32 else 1e-13
    assert (alpha.square() + sigma.square() - 1).abs().max() < tol
    if schedule in kw:
        assert float(sde.log_snr(1.0)) == pytest.approx(log_snr_end, abs=1e-6 if dtype == F64 else 1e-3)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ss.VPSDE(alpha_bar=lambda t: torch.cos(0.5 * math.pi * t) ** 2),
         r"alpha_bar\(t\) reaches alpha_bar = 0 at T = 1 \(alpha_bar\(1\) = 3.75e-33, log-SNR below -20\): beta\(t\) = "
         r"-d log alpha_bar/dt diverges there; truncate the schedule"),
        (lambda: ss.VPSDE(alpha_bar=lambda t: 1 - t),
         r"alpha_bar\(t\) must lie in \(0, 1\] on \[0, 1\], got 0.0 at t = 1 \(an alpha_bar that reaches 0 at T = 1"),
        (lambda: ss.VPSDE(alpha_bar=lambda t: 0.5 + 0.4 * torch.cos(6 * t)),
         r"alpha_bar\(t\) must be strictly decreasing on \[0, 1\] \(noise grows with t\), but alpha_bar\(0.523"),
        (lambda: ss.VPSDE(alpha_bar=lambda t: 1.5 - t), r"alpha_bar\(t\) must lie in \(0, 1\] on \[0, 1\], got 1.5 at t = 0"),
        (lambda: ss.VPSDE(alpha_bar=lambda t: torch.exp(-1 / (1 - t))), r"alpha_bar\(t\) must lie in \(0, 1\]"),
        (lambda: ss.VPSDE(log_snr=lambda t: 3 - 8 * t + torch.log(1 - t)), r"log_snr\(t\) must be finite on \[0, 1\], got -inf at t = 1"),
        (lambda: ss.VPSDE(log_snr=lambda t: torch.from_numpy(3 - 8 * t.detach().numpy())),
         "log_snr must be differentiable in t by autograd"),
        (lambda: ss.VPSDE(alpha_bar="cos"), r"alpha_bar must be callable alpha_bar\(t\), got str"),
        (lambda: ss.VPSDE(alpha_bar=lambda t: 1 - t / 2, log_snr=lambda t: -t), "give alpha_bar or log_snr, not both"),
        (lambda: ss.VPSDE(schedule="cosine", alpha_bar=lambda t: 1 - t / 2), "give schedule='cosine' or a callable"),
        (lambda: ss.VPSDE(schedule="sigmoid", log_snr_end=1.0), r"log_snr_end must be a number in \[-20, 0\)"),
        (lambda: ss.VPSDE(schedule="sigmoid", sigmoid_start=2.0, sigmoid_end=1.0), "sigmoid_end must be > sigmoid_start=2"),
        (lambda: ss.VPSDE(schedule="sigmoid", sigmoid_tau=0.0), "sigmoid_tau must be a positive finite number"),
        (lambda: ss.VPSDE(schedule="shifted_cosine", shift=-1.0), "shift must be a positive finite number"),
        (lambda: ss.VPSDE(schedule="cosine", cosine_end=1.0), r"cosine_end must be a number in \(0, 1\), got 1.0"),
        (lambda: ss.VPSDE(schedule="scaled_linear", beta_min=2.0, beta_max=1.0), "beta_max must be >= beta_min=2"),
    ],
)
def test_bad_schedules_are_refused(build, match):
    with pytest.raises(ss.ArgumentError, match=match):
        build()
