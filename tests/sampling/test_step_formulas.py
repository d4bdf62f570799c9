"""Samplers whose steps apply coefficients computed once on the host (``sampling/coefficients.py``)
against the same steps written out from the SDE's own methods, per step and with the same noise.

Each reference loop draws its noise from a generator seeded as ``ss.sample``'s, in the order the
sampler draws it, and evaluates every quantity with tensors at the step's time (``sde.reverse``,
``sde.discretize``, ``sde.marginal``); in float64 the two agree to round-off, on VP, VE, sub-VP
and a LinearSDE given by its coefficients (marginals integrated numerically).
"""

import math

import pytest
import torch
from sampling_helpers import GaussianTarget

import scoresde as ss

F64 = torch.float64
SDES = [ss.VPSDE(), ss.VESDE(0.01, 20.0), ss.SubVPSDE(),
        ss.LinearSDE(lambda t: -0.5 - t, lambda t: (1.0 + 2 * t).sqrt())]
GRID = torch.tensor([1.0, 0.7, 0.45, 0.2, 0.05], dtype=F64)


def _setup(sde):
    target = GaussianTarget(sde, torch.tensor([-1.0, 0.5, 1.5], dtype=F64), torch.diag(torch.tensor([0.3, 1.0, 2.0])))
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * 2
    return target.score, x


def _ours(score, sde, x, name, **kw):
    return ss.sample(score, sde, x.shape, sampler=name, grid=GRID, x_start=x, seed=5, denoise=False, **kw).x


def _t(t, x):
    return t.expand(x.shape[0])


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_euler_maruyama_is_the_reverse_sde_step(sde):
    score, x = _setup(sde)
    gen, rsde, ref = torch.Generator().manual_seed(5), sde.reverse(score), x.clone()
    for t, s in zip(GRID[:-1], GRID[1:], strict=True):
        h = t - s
        ref = ref - rsde.drift(ref, _t(t, ref)) * h + sde.g(t) * h.sqrt() * torch.randn(ref.shape, generator=gen, dtype=F64)
    torch.testing.assert_close(_ours(score, sde, x, "euler_maruyama"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_reverse_diffusion_is_the_reverse_of_the_sde_discretisation(sde):
    score, x = _setup(sde)
    gen, rsde, ref = torch.Generator().manual_seed(5), sde.reverse(score), x.clone()
    for t, s in zip(GRID[:-1], GRID[1:], strict=True):
        rev_f, rev_g = rsde.discretize(ref, _t(t, ref), t - s)
        ref = ref - rev_f + rev_g * torch.randn(ref.shape, generator=gen, dtype=F64)
    torch.testing.assert_close(_ours(score, sde, x, "reverse_diffusion"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variance", ["posterior", "forward"])
@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_ancestral_is_the_gaussian_posterior_step(sde, variance):
    score, x = _setup(sde)
    gen, ref = torch.Generator().manual_seed(5), x.clone()
    for t, s in zip(GRID[:-1], GRID[1:], strict=True):
        (a_t, s_t), (a_s, s_s) = sde.marginal(t), sde.marginal(s)
        a_ts = a_t / a_s
        var = s_t**2 - a_ts**2 * s_s**2
        std = var.sqrt() * (s_s / s_t if variance == "posterior" else 1)
        ref = (ref + var * score(ref, _t(t, ref))) / a_ts + std * torch.randn(ref.shape, generator=gen, dtype=F64)
    torch.testing.assert_close(_ours(score, sde, x, "ancestral", variance=variance), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_heun_is_edms_second_order_step_in_the_scaled_state(sde):
    score, x = _setup(sde)
    ref = x.clone()

    def slope(xh, t):  # (x_hat - D(x_hat; sigma_tilde)) / sigma_tilde, D the Tweedie denoiser
        a, s = sde.marginal(t)
        x0 = (a * xh + s**2 * score(a * xh, _t(t, xh))) / a
        return (xh - x0) / (s / a)

    for t, s in zip(GRID[:-1], GRID[1:], strict=True):
        (a_t, s_t), (a_s, s_s) = sde.marginal(t), sde.marginal(s)
        xh, dlev = ref / a_t, s_s / a_s - s_t / a_t
        d = slope(xh, t)
        ref = a_s * (xh + dlev * 0.5 * (d + slope(xh + dlev * d, s)))
    torch.testing.assert_close(_ours(score, sde, x, "heun"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_predictor_corrector_is_reverse_diffusion_then_langevin_with_a_step_in_t_alone(sde):
    score, x = _setup(sde)
    snr = 0.1
    gen, rsde, ref = torch.Generator().manual_seed(5), sde.reverse(score), x.clone()
    for t, s in zip(GRID[:-1], GRID[1:], strict=True):
        rev_f, rev_g = rsde.discretize(ref, _t(t, ref), t - s)
        ref = ref - rev_f + rev_g * torch.randn(ref.shape, generator=gen, dtype=F64)
        (a_t, _), (a_s, s_s) = sde.marginal(t), sde.marginal(s)
        for _ in range(2):
            eps = 2 * (a_t / a_s) ** 2 * snr**2 * s_s**2
            ref = ref + eps * score(ref, _t(s, ref)) + (2 * eps).sqrt() * torch.randn(ref.shape, generator=gen, dtype=F64)
    ours = _ours(score, sde, x, "pc", snr=snr, corrector_steps=2)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", SDES[:3], ids=repr)
def test_annealed_langevin_steps_at_c_sigma_squared(sde):
    score, x = _setup(sde)
    gen, ref = torch.Generator().manual_seed(5), x.clone()
    for s in GRID[1:]:
        eps = 0.05 * sde.marginal(s)[1] ** 2
        for _ in range(3):
            ref = ref + eps * score(ref, _t(s, ref)) + math.sqrt(2) * eps.sqrt() * torch.randn(ref.shape, generator=gen, dtype=F64)
    ours = _ours(score, sde, x, "annealed_langevin", n_steps_each=3, step_size=0.05)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
