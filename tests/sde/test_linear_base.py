"""LinearSDEBase: the prediction conversions, the generic defaults and the properties solvers branch on."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as ss
from scoresde.sde import LinearSDEBase

F64 = torch.float64
KINDS = ("score", "eps", "x0", "v")


def all_sdes():
    return {
        "vp": ss.VPSDE(),
        "vp_cosine": ss.VPSDE(schedule="cosine"),
        "vp_sigmoid": ss.VPSDE(schedule="sigmoid"),
        "subvp": ss.SubVPSDE(),
        "ve": ss.VESDE(0.01, 50.0),
        "linear": ss.LinearSDE(lambda t: -0.5 * (1 + 4 * t), lambda t: (1 + 4 * t).sqrt()),
        "discrete": ss.DiscreteVPSDE(betas=torch.linspace(1e-4, 0.02, 1000)),
    }


SDES = all_sdes()


def predictions(sde, x0, eps, t, data_std):
    """Every kind of prediction at x = alpha x0 + sigma eps, from the definitions (the kinds' units)."""
    alpha, sigma = (v.reshape(-1, *[1] * (x0.dim() - 1)) for v in sde.marginal(t))
    x = alpha * x0 + sigma * eps
    a = alpha * data_std
    v = (a * eps - sigma * x0 / data_std) / (a.square() + sigma.square()).sqrt()
    return x, {"score": -eps / sigma, "eps": eps, "x0": x0 / data_std, "v": v}


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(list(SDES)),
    event=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    batch=st.integers(1, 4),
    t_value=st.floats(1e-3, 1.0),
    data_std=st.sampled_from([1.0, 0.5, 3.0]),
    scalar_t=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_conversion_gives_the_defined_quantity_and_round_trips(name, event, batch, t_value, data_std, scalar_t, seed):
    sde = SDES[name]
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *event), generator=gen, dtype=F64)
    eps = torch.randn((batch, *event), generator=gen, dtype=F64)
    t = torch.full((batch,), t_value, dtype=F64)
    x, preds = predictions(sde, x0, eps, t, data_std)
    t_arg = torch.tensor(t_value, dtype=F64) if scalar_t else t
    convert = {"score": sde.to_score, "eps": sde.to_eps, "x0": sde.to_x0, "v": sde.to_v}
    for src in KINDS:
        for dst in KINDS:
            out = convert[dst](preds[src], x, t_arg, src, data_std=data_std)
            assert out.shape == x.shape and out.dtype == F64
            scale = preds[dst].abs().max() + 1
            assert (out - preds[dst]).abs().max() <= 1e-9 * scale, (src, dst)
    # round trips through every intermediate kind
    for mid in KINDS:
        back = sde.to_x0(convert[mid](preds["x0"], x, t_arg, "x0", data_std=data_std), x, t_arg, mid, data_std=data_std)
        torch.testing.assert_close(back, preds["x0"], rtol=1e-9, atol=1e-9)


def test_v_is_salimans_and_hos_on_vp_and_the_conversions_keep_float32():
    sde = ss.VPSDE()
    t = torch.tensor([0.3, 0.7])
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    alpha, sigma = (v[:, None] for v in sde.marginal(t))
    x = alpha * x0 + sigma * eps
    v = alpha * eps - sigma * x0  # alpha^2 + sigma^2 = 1
    assert sde.variance_preserving
    out = sde.to_v(eps, x, t, "eps")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sde.to_eps(v, x, t, "v"), eps, rtol=1e-5, atol=1e-5)


def test_score_model_parameterisations_are_the_sde_conversions():
    # ScoreModel delegates: its score for every parameterisation is to_score of the raw output
    sde = ss.VPSDE(schedule="cosine")
    x, t = torch.randn(5, 2, dtype=F64), torch.rand(5, dtype=F64) * 0.9 + 0.05
    for p in ("eps", "x0", "v"):
        model = ss.ScoreModel(ss.MLP(2, 16, 2), sde, p, data_std=2.0).double()
        out = model.net_output(x, t)
        torch.testing.assert_close(model(x, t), sde.to_score(out, x, t, p, data_std=2.0), rtol=0, atol=0)
        torch.testing.assert_close(model.eps(x, t), sde.to_eps(model(x, t), x, t, "score"), rtol=1e-12, atol=0)


def test_conversion_arguments_are_checked():
    sde = ss.VPSDE()
    x = torch.zeros(3, 2)
    with pytest.raises(ss.ArgumentError, match="kind must be one of 'score', 'eps', 'x0', 'v'; got 'noise'"):
        sde.to_score(x, x, 0.5, "noise")
    with pytest.raises(ss.ArgumentError, match="data_std must be a positive finite number, got -1.0"):
        sde.to_x0(x, x, 0.5, "eps", data_std=-1.0)
    with pytest.raises(ss.ArgumentError, match=r"t must be a scalar or have the leading \(batch\) shape of x"):
        sde.to_eps(x, x, torch.full((4,), 0.5), "score")
    with pytest.raises(ss.ArgumentError, match=r"t must lie in \[0, T\]"):
        sde.to_v(x, x, 1.5, "x0")


# ---- the generic defaults: a subclass that gives its marginal only --------------------------------
class MarginalOnlyOU(LinearSDEBase):
    """dx = -theta x dt + s dW from x_0: alpha = e^{-theta t}, sigma^2 = s^2 (1 - e^{-2 theta t}) / (2 theta)."""

    theta, s = 1.3, 0.7

    def marginal(self, t):
        t = self.time(t)
        var = self.s**2 * -torch.expm1(-2 * self.theta * t) / (2 * self.theta)
        return torch.exp(-self.theta * t), var.sqrt()


def test_f_g_and_inverse_log_snr_follow_from_the_marginal_alone():
    sde = MarginalOnlyOU()
    t = torch.linspace(0.01, 1.0, 50, dtype=F64)
    torch.testing.assert_close(sde.f(t), torch.full_like(t, -sde.theta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sde.g(t), torch.full_like(t, sde.s), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-12)
    # lam beyond the range of log_snr on [0, T] gives the nearer end
    lam_T = float(sde.log_snr(1.0))
    assert float(sde.t_from_log_snr(torch.tensor(lam_T - 3, dtype=F64))) == pytest.approx(1.0)
    assert sde.prior_std == pytest.approx(float(sde.marginal(1.0)[1]))
    # and the numeric LinearSDE of the same f, g agrees
    numeric = ss.LinearSDE(lambda t: -sde.theta + 0 * t, lambda t: sde.s + 0 * t)
    torch.testing.assert_close(numeric.marginal(t)[1], sde.marginal(t)[1], rtol=1e-9, atol=0)


def test_generic_derivatives_run_under_no_grad():
    sde = MarginalOnlyOU()
    with torch.no_grad():
        d = sde.dlog_snr_dt(torch.tensor([0.5], dtype=F64))
    _, sigma = sde.marginal(0.5)
    assert float(d) == pytest.approx(-0.5 * sde.s**2 / float(sigma) ** 2, rel=1e-9)


@pytest.mark.parametrize("name", list(SDES))
def test_log_snr_derivative_is_minus_half_g2_over_sigma2(name):
    sde = SDES[name]
    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    _, sigma = sde.marginal(t)
    torch.testing.assert_close(sde.dlog_snr_dt(t), -0.5 * sde.g(t).square() / sigma.square(), rtol=1e-9, atol=0)


def test_properties_replace_the_type_checks():
    drift_free = {name for name, sde in SDES.items() if sde.alpha_is_one}
    assert drift_free == {"ve"}
    assert ss.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t).alpha_is_one
    vp = {name for name, sde in SDES.items() if sde.variance_preserving}
    assert vp == {"vp", "vp_cosine", "vp_sigmoid", "discrete"}
    for sde in SDES.values():
        assert isinstance(sde, LinearSDEBase) and isinstance(sde, ss.SDE)
        t = torch.linspace(0.01, 1, 9, dtype=F64)
        alpha, sigma = sde.marginal(t)
        if sde.alpha_is_one:
            assert bool((alpha == 1).all())
        if sde.variance_preserving:
            assert (alpha.square() + sigma.square() - 1).abs().max() < 1e-12
    # the numeric LinearSDE is a sibling of the closed forms, not their base class
    assert not isinstance(ss.VPSDE(), ss.LinearSDE) and not isinstance(ss.VESDE(), ss.LinearSDE)


def test_exact_mixture_score_holds_under_every_linear_sde():
    # the analytic mixture's score is the gradient of its log p_t, under every final class
    gmm = ss.analytic.ring_mixture(4, radius=2.0, std=0.4)
    x = torch.randn(6, 2, dtype=F64)
    for sde in SDES.values():
        t = torch.full((6,), 0.4, dtype=F64)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(gmm.log_prob(xg, t, sde).sum(), xg)
        torch.testing.assert_close(gmm.score_fn(sde)(x, t), grad, rtol=1e-10, atol=1e-12)
    assert math.isfinite(float(gmm.log_prob(x, 0.4, SDES["discrete"]).sum()))
