"""Trace estimators against brute-force Jacobians, and Hutchinson's unbiasedness in the solve."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as ss
from scoresde.likelihood import draw_probes, exact_divergence, hutchinson_divergence

from .conftest import data, mixture


def _field(d, seed):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=gen, dtype=torch.float64)
    b = torch.randn(d, generator=gen, dtype=torch.float64)

    def v(y):  # per-sample nonlinear field with a dense, non-symmetric Jacobian
        flat = y.flatten(1)
        return (torch.tanh(flat @ W.T + b) + 0.3 * flat.square()).reshape(y.shape)

    return v


def _brute_jacobians(v, x):
    return [torch.autograd.functional.jacobian(lambda y: v(y[None]).flatten(), xi) .reshape(xi.numel(), xi.numel())
            for xi in x]


@given(
    batch=st.integers(1, 3),
    sample_shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    chunk=st.one_of(st.none(), st.integers(1, 5)),
    seed=st.integers(0, 1000),
)
def test_exact_divergence_is_the_jacobian_trace(batch, sample_shape, chunk, seed):
    d = math.prod(sample_shape)
    v = _field(d, seed)
    x = torch.randn(batch, *sample_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out, div = exact_divergence(v, x, chunk_size=chunk)
    torch.testing.assert_close(out, v(x))
    expected = torch.stack([J.trace() for J in _brute_jacobians(v, x)])
    torch.testing.assert_close(div, expected, rtol=1e-10, atol=1e-10)


@given(n_probes=st.integers(1, 4), chunk=st.one_of(st.none(), st.integers(1, 3)), seed=st.integers(0, 1000))
def test_hutchinson_is_the_probe_quadratic_form(n_probes, chunk, seed):
    v = _field(5, seed)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    probes = draw_probes(x, n_probes, "gaussian", torch.Generator().manual_seed(seed + 1))
    _, est = hutchinson_divergence(v, x, probes, chunk_size=chunk)
    Js = _brute_jacobians(v, x)
    expected = torch.stack([
        torch.stack([probes[k, b] @ Js[b] @ probes[k, b] for k in range(n_probes)]).mean() for b in range(3)
    ])
    torch.testing.assert_close(est, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_probes_have_identity_second_moment(noise):
    x = torch.zeros(4, 3, dtype=torch.float32)
    p = draw_probes(x, 20_000, noise, torch.Generator().manual_seed(0))
    assert p.shape == (20_000, 4, 3) and p.dtype == torch.float32
    flat = p.flatten(1).double()
    second = flat.T @ flat / len(flat)
    # Monte-Carlo tolerance: entries of the sample second moment have std <= sqrt(2/n) ~ 0.01
    torch.testing.assert_close(second, torch.eye(12, dtype=torch.float64), rtol=0, atol=0.05)
    if noise == "rademacher":
        assert set(p.unique().tolist()) == {-1.0, 1.0}
    same = draw_probes(x, 20_000, noise, torch.Generator().manual_seed(0))
    assert torch.equal(p, same)


@pytest.mark.slow
def test_hutchinson_unbiased_and_rademacher_lower_variance():
    """200 independent probe draws per point (one solve: each point repeated 200 times in the
    batch, every copy with its own fixed probe): the mean lies within 3 standard errors of the
    exact-trace likelihood, and Rademacher probes give a smaller spread than Gaussian ones."""
    sde, gmm = ss.VPSDE(), mixture(8)
    x = data(gmm, sde, 3, seed=21)
    reps = 200
    kw = dict(rtol=1e-6, atol=1e-6, prior_log_prob=gmm.prior_log_prob(sde))
    exact = ss.log_likelihood(gmm.score_fn(sde), sde, x, trace="exact", **kw).log_p
    xr = x.repeat_interleave(reps, 0)
    spread = {}
    for noise, seed in (("rademacher", 1), ("gaussian", 2)):
        res = ss.log_likelihood(
            gmm.score_fn(sde), sde, xr, trace="hutchinson", noise=noise,
            generator=torch.Generator().manual_seed(seed), **kw,
        )
        draws = res.log_p.reshape(3, reps)
        mean, se = draws.mean(1), draws.std(1) / math.sqrt(reps)
        assert ((mean - exact).abs() <= 3 * se).all(), (noise, mean - exact, se)
        assert (se > 0).all()
        spread[noise] = draws.std(1)
    assert (spread["rademacher"] < spread["gaussian"]).all(), spread


def test_hutchinson_probes_average_and_reproduce():
    sde, gmm = ss.VESDE(), mixture(8)
    x = data(gmm, sde, 4)
    kw = dict(trace="hutchinson", rtol=1e-4, atol=1e-4)
    a = ss.log_likelihood(gmm.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(3), **kw)
    b = ss.log_likelihood(gmm.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(3), **kw)
    c = ss.log_likelihood(gmm.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a.log_p, b.log_p)
    assert not torch.equal(a.log_p, c.log_p)
    # probes=4 is the average of four single-probe quadratic forms: chunking must not matter
    g4 = ss.log_likelihood(gmm.score_fn(sde), sde, x, probes=4, generator=torch.Generator().manual_seed(5), **kw)
    g4c = ss.log_likelihood(
        gmm.score_fn(sde), sde, x, probes=4, chunk_size=3, generator=torch.Generator().manual_seed(5), **kw
    )
    torch.testing.assert_close(g4.log_p, g4c.log_p, rtol=0, atol=1e-9)
