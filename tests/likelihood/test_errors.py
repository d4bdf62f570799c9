"""Bad input gets an ArgumentError naming the argument; failed solves and non-finite values say
where they happened; a score that would make the answer silently wrong is refused."""

import math
import re

import pytest
import torch

import scoresde as ss
from scoresde.likelihood import ODESolveError

from .conftest import data, mixture


@pytest.fixture
def case():
    sde, gmm = ss.VPSDE(), mixture(2)
    return gmm.score_fn(sde), sde, data(gmm, sde, 4)


def test_nan_in_x(case):
    score, sde, x = case
    x = x.clone()
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        ss.log_likelihood(score, sde, x)
    with pytest.raises(ValueError, match="x must be finite"):
        ss.encode(score, sde, x)
    with pytest.raises(ValueError, match="z must be finite"):
        ss.decode(score, sde, x)


def test_shape_rejected_by_score_fn(case):
    score, sde, x = case
    with pytest.raises(ValueError, match=re.escape("score_fn rejected x of shape (4, 3)")):
        ss.log_likelihood(score, sde, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="score_fn must return a tensor of x's shape"):
        ss.log_likelihood(lambda x, t: x[:, :1], sde, x)
    with pytest.raises(ValueError, match=re.escape("score_fn rejected x of shape (4, 3)")):
        ss.encode(score, sde, torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=0.0), "rtol must be a number in \\(0, 1\\), got 0.0"),
        (dict(rtol=-1e-5), "rtol must be a number in \\(0, 1\\), got -1e-05"),
        (dict(atol=float("nan")), "atol must be a number in \\(0, 1\\)"),
        (dict(trace="full"), "trace must be one of 'exact', 'hutchinson', 'hutch[+][+]'; got 'full'"),
        (dict(trace="hutchinson", noise="uniform"), "noise must be one of 'rademacher', 'gaussian'; got 'uniform'"),
        (dict(noise="normal"), "noise must be one of"),
        (dict(probes=0), "probes must be an integer >= 1, got 0"),
        (dict(chunk_size=0), "chunk_size must be an integer >= 1, got 0"),
        (dict(max_steps=1.5), "max_steps must be an integer >= 1, got 1.5"),
        (dict(method="rk4"), "method must be one of 'dopri5'"),
        (dict(eps=1.0), "eps must be a number in \\(0, 1\\), got 1.0"),
        (dict(eps=-0.1), "eps must be a number in"),
        (dict(prior_log_prob=3), "prior_log_prob must be callable"),
    ],
)
def test_bad_arguments(case, kwargs, match):
    score, sde, x = case
    with pytest.raises(ValueError, match=match):
        ss.log_likelihood(score, sde, x, **kwargs)


def test_bad_data_and_sde(case):
    score, sde, x = case
    with pytest.raises(ValueError, match="x must have shape \\(batch, \\*dims\\)"):
        ss.log_likelihood(score, sde, x[0])
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        ss.log_likelihood(score, sde, torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="sde must be a scoresde.SDE"):
        ss.log_likelihood(score, "vp", x)
    with pytest.raises(ValueError, match="score_fn must be callable"):
        ss.log_likelihood(None, sde, x)
    with pytest.raises(ValueError, match="prior_log_prob must return a floating tensor of shape \\(4,\\)"):
        ss.log_likelihood(score, sde, x, prior_log_prob=lambda z: z.sum())

    class Multiplicative(ss.SDE):
        prior_std = 1.0
        state_dependent_diffusion = True

        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return 0.1 * x

    with pytest.raises(ValueError, match="diffusion that depends on t only"):
        ss.log_likelihood(score, Multiplicative(), x)


def test_max_steps_exceeded_names_the_time(case):
    score, sde, x = case
    with pytest.raises(ODESolveError, match=r"maximum number of solver steps \(max_steps=3\) was reached at "
                                            r"t=0\.\d+.*; try increasing max_steps") as info:
        ss.log_likelihood(score, sde, x, max_steps=3, rtol=1e-8, atol=1e-8)
    assert info.value.reason == "max_steps"
    with pytest.raises(ODESolveError, match=r"\(max_steps=2\) was reached at t="):
        ss.decode(score, sde, x, max_steps=2)


def test_nan_in_the_drift_names_the_time(case):
    score, sde, x = case

    def breaks_at_half(x, t):
        s = score(x, t)
        return torch.where((t > 0.5)[:, None], torch.full_like(s, float("nan")), s)

    with pytest.raises(ss.NonFiniteError, match="non-finite") as info:
        ss.log_likelihood(breaks_at_half, sde, x)
    t_bad = float(re.search(r"at t=([0-9.eE+-]+)", str(info.value)).group(1))
    assert 0.5 < t_bad < 0.7


def test_ve_failures_report_time_not_noise_level():
    # VE is integrated in sigma; the messages must still speak of t in [eps, T]
    sde, gmm = ss.VESDE(), mixture(2)
    x = data(gmm, sde, 4)
    with pytest.raises(ODESolveError, match=r"max_steps=4") as info:
        ss.log_likelihood(gmm.score_fn(sde), sde, x, max_steps=4, rtol=1e-9, atol=1e-9)
    reached = float(re.search(r"was reached at t=([0-9.eE+-]+)", str(info.value)).group(1))
    assert 0 < reached < 1

    def breaks_at_07(x, t):
        s = gmm.score(x, t, sde)
        return torch.where((t > 0.7)[:, None], torch.full_like(s, float("inf")), s)

    with pytest.raises(ss.NonFiniteError, match="non-finite") as info:
        ss.log_likelihood(breaks_at_07, sde, x)
    t_bad = float(re.search(r"at t=([0-9.eE+-]+)", str(info.value)).group(1))
    assert 0.7 < t_bad < 0.9


# ---- results that used to come back wrong without an error ----------------------------------------
def _no_grad_wrapper(score):
    def wrapped(x, t):
        with torch.no_grad():
            return score(x, t)

    return wrapped


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
@pytest.mark.parametrize(
    "wrap",
    [lambda s: (lambda x, t: s(x, t).detach()), _no_grad_wrapper,
     lambda s: (lambda x, t: torch.from_numpy(s(x, t).detach().cpu().numpy()))],
    ids=["detach", "no_grad", "numpy"],
)
def test_score_that_is_not_differentiable_in_x_is_refused(case, trace, wrap):
    # Such a score has a zero autograd Jacobian: log p used to come out ~11 nats too low.
    score, sde, x = case
    with pytest.raises(ss.ArgumentError, match="score_fn is not differentiable in x.*no_grad"):
        ss.log_likelihood(wrap(score), sde, x, trace=trace)
    # a network wrapped in no_grad: the parameters do not matter, the input dependence does
    net = ss.ScoreModel(ss.MLP(2, 8, 1), sde).double()
    with pytest.raises(ss.ArgumentError, match="not differentiable in x"):
        ss.log_likelihood(_no_grad_wrapper(net), sde, x, trace=trace)
    ss.log_likelihood(net, sde, x, trace=trace, rtol=1e-3, atol=1e-3)  # the network itself is fine


def test_prior_log_prob_that_returns_nan_is_an_error(case):
    score, sde, x = case
    with pytest.raises(ss.NonFiniteError, match="prior_log_prob returned NaN or \\+inf for 4 of 4"):
        ss.log_likelihood(score, sde, x, prior_log_prob=lambda z: torch.full((z.shape[0],), float("nan"), dtype=z.dtype))
    with pytest.raises(ss.ArgumentError, match="prior_log_prob must return a floating tensor of shape \\(4,\\)"):
        ss.log_likelihood(score, sde, x, prior_log_prob=lambda z: torch.zeros(z.shape[0], dtype=torch.int64))
    # -inf is a valid answer (zero prior density), not an error
    res = ss.log_likelihood(score, sde, x, prior_log_prob=lambda z: torch.full((z.shape[0],), -math.inf, dtype=z.dtype))
    assert bool((res.log_p == -math.inf).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_data_get_a_clear_error(case, dtype):
    score, sde, x = case
    for fn in (ss.log_likelihood, ss.encode, ss.decode):
        with pytest.raises(ss.ArgumentError, match=f"must be float32 or float64, got {dtype}"):
            fn(score, sde, x.to(dtype))
    with pytest.raises(ss.ArgumentError, match="x must be float32 or float64"):
        ss.nll_bound(score, sde, x.to(dtype))


def test_data_that_overflow_the_score_say_so_with_the_time(case):
    # x = 1e30 in float32: the mixture's score overflows to NaN at once. This used to end in the
    # misleading "t must lie in [0, T], got nan"; it is the drift's failure at t = eps.
    score, sde, _ = case
    x = torch.full((4, 2), 1e30, dtype=torch.float32)
    with pytest.raises(ss.NonFiniteError, match=r"drift became non-finite \(NaN or inf\) at t=1e-05"):
        ss.log_likelihood(ss.analytic.ring_mixture(8, radius=4.0, std=0.3).to(dtype=torch.float32).score_fn(sde), sde, x)


def test_nll_bound_checks_the_score_and_the_prior():
    sde, gmm = ss.VPSDE(), mixture(2)
    x = data(gmm, sde, 4)
    score = gmm.score_fn(sde)
    with pytest.raises(ss.ArgumentError, match="score_fn must return a tensor of x's shape \\(256, 2\\), got \\(2, 256\\)"):
        ss.nll_bound(lambda y, t: score(y, t).T, sde, x, samples=64)  # accepted before: 76 nats off
    nan_late = lambda y, t: torch.where((t > 0.5)[:, None], math.nan, score(y, t))  # noqa: E731
    with pytest.raises(ss.NonFiniteError, match=r"score_fn returned NaN or inf at t=0\.5") as info:
        ss.nll_bound(nan_late, sde, x, samples=64)
    assert 0.5 < float(re.search(r"at t=([0-9.]+)", str(info.value)).group(1)) < 0.6
    with pytest.raises(ss.ArgumentError, match="prior_log_prob must return a floating tensor of shape \\(256,\\)"):
        ss.nll_bound(score, sde, x, samples=64, prior_log_prob=lambda z: z.sum(1, keepdim=True))
    with pytest.raises(ss.NonFiniteError, match="prior_log_prob returned NaN"):
        ss.nll_bound(score, sde, x, samples=64, prior_log_prob=lambda z: z.sum(1) * math.nan)


def test_bits_per_dim_refuses_an_integer_dtype(case):
    score, sde, _ = case
    u = torch.randint(0, 256, (4, 2))
    with pytest.raises(ss.ArgumentError, match="dtype must be a floating-point torch.dtype"):
        ss.bits_per_dim(score, sde, u, dtype=torch.int64)
