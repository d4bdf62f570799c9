"""Trace estimators against brute-force Jacobians, and Hutchinson's unbiasedness in the solve."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as ss
from scoresde.likelihood import draw_probes, exact_divergence, hutchinson_divergence
from scoresde.likelihood.divergence import BATCHING_MODES, Batching

from .conftest import FunctorchRefused, data, mixture


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
    batching=st.sampled_from(BATCHING_MODES),
)
def test_exact_divergence_is_the_jacobian_trace(batch, sample_shape, chunk, seed, batching):
    d = math.prod(sample_shape)
    v = _field(d, seed)
    x = torch.randn(batch, *sample_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out, div = exact_divergence(v, x, chunk_size=chunk, batching=batching)
    torch.testing.assert_close(out, v(x))
    expected = torch.stack([J.trace() for J in _brute_jacobians(v, x)])
    torch.testing.assert_close(div, expected, rtol=1e-10, atol=1e-10)


@given(n_probes=st.integers(1, 4), chunk=st.one_of(st.none(), st.integers(1, 3)), seed=st.integers(0, 1000),
       batching=st.sampled_from(BATCHING_MODES))
def test_hutchinson_is_the_probe_quadratic_form(n_probes, chunk, seed, batching):
    v = _field(5, seed)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    probes = draw_probes(x, n_probes, "gaussian", torch.Generator().manual_seed(seed + 1))
    out, est = hutchinson_divergence(v, x, probes, chunk_size=chunk, batching=batching)
    torch.testing.assert_close(out, v(x))
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


# ---- networks vmap cannot batch: the replicated fallback -----------------------------------------
def _sin_field(d, seed):
    base = _field(d, seed)
    return lambda y: base(y) + FunctorchRefused.apply(y)


def test_exact_divergence_falls_back_when_vmap_refuses_the_network():
    v = _sin_field(6, seed=4)
    x = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with pytest.raises(RuntimeError, match="setup_context"):
        exact_divergence(v, x, batching="vmap")
    batching = Batching()
    out, div = exact_divergence(v, x, chunk_size=4, batching=batching)
    assert batching.mode == "replicate"  # remembered: the next call goes straight to it
    torch.testing.assert_close(out, v(x))
    expected = torch.stack([J.trace() for J in _brute_jacobians(v, x)])
    torch.testing.assert_close(div, expected, rtol=1e-10, atol=1e-10)


def test_a_working_network_keeps_vmap_and_a_broken_one_raises_its_own_error():
    batching = Batching()
    exact_divergence(_field(6, 0), torch.randn(2, 6, dtype=torch.float64), batching=batching)
    assert batching.mode == "vmap"

    def broken(y):  # fails without any transform too: its own error, not a vmap complaint
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        exact_divergence(broken, torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(ss.ArgumentError, match="batching"):
        Batching("loop")


def test_the_likelihood_decides_once_per_solve():
    """A score vmap cannot batch: the solve tries vmap at its first evaluation only, then
    replicates, and gets the same log-likelihood as a score vmap can batch."""
    sde = ss.VPSDE()
    calls = {"functorch": 0}
    is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

    def score(x, t):
        calls["functorch"] += bool(is_wrapped(x))
        a, s = sde.marginal(t)
        return -(x + 0.5 * FunctorchRefused.apply(x)) / (a.square() + s.square())[:, None]

    def plain(x, t):
        a, s = sde.marginal(t)
        return -(x + 0.5 * x.sin()) / (a.square() + s.square())[:, None]

    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # D > 4: not the loop
    res = ss.log_likelihood(score, sde, x, trace="exact", rtol=1e-6, atol=1e-6)
    ref = ss.log_likelihood(plain, sde, x, trace="exact", rtol=1e-6, atol=1e-6)
    assert calls["functorch"] == 1 and res.nfe > 10
    torch.testing.assert_close(res.log_p, ref.log_p, rtol=0, atol=1e-9)


def _tiny_unet(seed=0):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval().requires_grad_(False).double()


@pytest.mark.slow
def test_exact_and_hutchinson_on_a_diffusers_unet_under_no_grad():
    """A diffusers UNet with frozen weights, under no_grad as in log_likelihood: vmap fails
    ("NYI: querying is_contiguous inside of vmap"); the fallback equals a hand loop of VJPs and
    the mean of 512 Rademacher probes lies within 4 standard errors of it."""
    unet = _tiny_unet()

    def v(y):  # the network at a fixed timestep, on any number of rows
        return unet(y, torch.full((y.shape[0],), 500.0, dtype=y.dtype)).sample

    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), pytest.raises(RuntimeError, match="vmap"):
        exact_divergence(v, x, batching="vmap")
    y = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out_ref = v(y)
        loop = torch.zeros(3, dtype=torch.float64)
        for i in range(64):
            e = torch.zeros(3, 64, dtype=torch.float64)
            e[:, i] = 1
            (row,) = torch.autograd.grad(out_ref, y, e.reshape(x.shape), retain_graph=True)
            loop += row.flatten(1)[:, i]
    batching = Batching()
    with torch.no_grad():
        out, div = exact_divergence(v, x, chunk_size=24, batching=batching)
        probes = draw_probes(x, 512, "rademacher", torch.Generator().manual_seed(2))
        hb = Batching()
        _, est = hutchinson_divergence(v, x, probes, chunk_size=128, batching=hb)
        forms = torch.stack([hutchinson_divergence(v, x, probes[k : k + 1])[1] for k in range(0, 512, 64)])
    assert batching.mode == "replicate" and hb.mode == "replicate"
    torch.testing.assert_close(out, out_ref.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(div, loop, rtol=0, atol=1e-10)
    # the chunked replicated estimate is the average of the single-probe quadratic forms
    _, est8 = hutchinson_divergence(v, x, probes[::64], batching="replicate")
    torch.testing.assert_close(est8, forms.mean(0), rtol=0, atol=1e-10)
    per_probe = torch.stack([(
        torch.autograd.functional.vjp(v, x, probes[k])[1] * probes[k]).flatten(1).sum(1) for k in range(0, 512, 16)])
    se = per_probe.std(0) / math.sqrt(512)
    assert ((est - loop).abs() <= 4 * se + 1e-9).all(), (est - loop, se)


def test_hutchpp_with_a_full_sketch_is_the_exact_trace():
    """With D sketch directions Q spans everything: the exact part is the whole trace, the residual
    probes are zero."""
    from scoresde.likelihood.divergence import hutchpp_divergence

    v = _field(5, 2)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    for batching in BATCHING_MODES:
        out, est = hutchpp_divergence(v, x, draw_probes(x, 5, "rademacher", gen), draw_probes(x, 2, "gaussian", gen),
                                      batching=batching)
        torch.testing.assert_close(out, v(x))
        torch.testing.assert_close(est, torch.stack([J.trace() for J in _brute_jacobians(v, x)]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batching", ["vmap", "replicate"])
def test_hutchpp_is_unbiased(batching):
    """Mean of 2000 Hutch++ estimates (1 sketch direction, 2 residual probes) against the exact trace,
    within 4 Monte-Carlo standard errors."""
    from scoresde.likelihood.divergence import hutchpp_divergence

    v = _field(6, 5)
    x = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).repeat(2000, 1)
    gen = torch.Generator().manual_seed(6)
    _, each = hutchpp_divergence(v, x, draw_probes(x, 1, "rademacher", gen), draw_probes(x, 2, "rademacher", gen),
                                 batching=batching, per_probe=True)
    est = each.mean(1).reshape(2000, 2).T  # per point: 2000 independent estimates (one sketch each)
    exact = torch.stack([J.trace() for J in _brute_jacobians(v, x[:2])])
    se = est.std(1) / math.sqrt(est.shape[1])
    assert bool(((est.mean(1) - exact).abs() < 4 * se).all()), (est.mean(1), exact, se)
