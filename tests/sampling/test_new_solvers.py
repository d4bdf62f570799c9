"""The few-step solvers (unipc, dpm_sde, ddim, ipndm) against diffusers' schedulers and exact answers.

Agreement with diffusers: both run on the same grid, the timesteps of the scheduler's
``set_timesteps`` as times of ``ss.DiscreteVPSDE.from_diffusers(scheduler)`` (the last one timestep 0,
``final_sigmas_type="sigma_min"``), with the scheduler's noise levels replaced by the SDE's in float64
(diffusers keeps them in float32) and the exact score of a Gaussian target, given to the scheduler as
:math:`\\epsilon = -\\sigma_t s(x, t)`. An algorithm that matches agrees to float64 round-off.
"""

import math

import pytest
import torch
from sampling_helpers import GaussianTarget, fit_slope

import scoresde as ss

diffusers = pytest.importorskip("diffusers")

N_TRAIN = 1000


def _target(sde):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    cov = 0.2 * a @ a.T / 3 + 0.1 * torch.eye(3, dtype=torch.float64)
    return GaussianTarget(sde, torch.tensor([-1.0, 0.5, 1.5], dtype=torch.float64), cov)


def _grid(scheduler, steps):
    """The SDE of ``scheduler``, the shared grid (float64 times) and the scheduler set on it."""
    sde = ss.DiscreteVPSDE.from_diffusers(scheduler)
    scheduler.set_timesteps(steps)
    ks = scheduler.timesteps.to(torch.float64)
    times = torch.cat([sde.t_from_timestep(ks), sde.t_from_timestep(torch.zeros(1, dtype=torch.float64))])
    a, s = sde.marginal(times)
    if hasattr(scheduler, "sigmas"):
        scheduler.sigmas = s / a  # diffusers' sigma = sigma_t / alpha_t, here in float64
    return sde, times


def _run_diffusers(scheduler, sde, times, score, x_T, noises=None, **step_kw):
    """diffusers' loop with epsilon = -sigma_t * score; ``noises[i]`` is step i's variance noise."""
    _, s = sde.marginal(times)
    x = x_T.clone()
    for i, k in enumerate(scheduler.timesteps):
        eps = -s[i] * score(x, times[i].expand(x.shape[0]))
        kw = dict(step_kw)
        if noises is not None:
            kw["variance_noise"] = noises[i]
        x = scheduler.step(eps, k, x, **kw).prev_sample
    return x


def _start(n=8, seed=1):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _agree(ours, theirs):
    diff = float((ours - theirs).abs().max())
    scale = float(theirs.abs().max())
    assert diff <= 1e-10 * scale, f"max |ours - diffusers| = {diff:.3e} (scale {scale:.3g})"
    return diff


# ---- UniPC --------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("corrector", [True, False])
@pytest.mark.parametrize("lower_order_final", [True, False])
def test_unipc_matches_diffusers(order, variant, prediction, corrector, lower_order_final):
    steps = 12
    sch = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=N_TRAIN, solver_order=order, solver_type=variant, predict_x0=prediction == "data",
        lower_order_final=lower_order_final, final_sigmas_type="sigma_min",
        disable_corrector=[] if corrector else list(range(steps)))
    sde, times = _grid(sch, steps)
    tgt = _target(sde)
    x_T = _start()
    theirs = _run_diffusers(sch, sde, times, tgt.score, x_T)
    res = ss.sample(tgt.score, sde, x_T.shape, sampler="unipc", order=order, variant=variant, prediction=prediction,
                    corrector=corrector, lower_order_final=lower_order_final, grid=times, x_start=x_T, denoise=False)
    assert res.nfe == steps
    _agree(res.x, theirs)


def test_unipc_corrector_and_variant_change_the_result():
    """The options are not ignored: the corrector, B(h) and the prediction each change the samples."""
    sde = ss.VPSDE()
    tgt = _target(sde)
    x_T = _start()

    def run(**opts):
        return ss.sample(tgt.score, sde, x_T.shape, sampler="unipc", steps=8, x_start=x_T, denoise=False, **opts).x

    base = run(order=3)
    for opts in (dict(order=3, corrector=False), dict(order=3, variant="bh1"), dict(order=3, prediction="noise"),
                 dict(order=2), dict(order=3, lower_order_final=False)):
        assert float((run(**opts) - base).abs().max()) > 1e-6, opts


@pytest.mark.parametrize("sde", [ss.VESDE(0.01, 20.0), ss.SubVPSDE(), ss.VPSDE(schedule="cosine")], ids=repr)
def test_unipc_order_on_other_linear_sdes(sde):
    """UniPC-2 (UniP-2 + UniC-2) keeps its declared order 3 on VE, sub-VP and the cosine VP."""
    tgt = _target(sde)
    x_T = _start() * sde.marginal(torch.tensor(sde.T, dtype=torch.float64))[1].clamp_min(1.0)
    exact = tgt.ode_solution(x_T, sde.T, 1e-3)
    steps = [20, 40, 80, 160]
    smp = ss.sampling.UniPC(order=2, lower_order_final=False)
    errors = [float((ss.sample(tgt.score, sde, x_T.shape, sampler=smp, steps=n, x_start=x_T, eps=1e-3,
                               denoise=False).x - exact).abs().max()) for n in steps]
    slope = fit_slope(steps, errors)
    assert abs(slope - smp.order(sde)) <= 0.25, (errors, slope)


def test_unipc_declarations():
    sde = ss.VPSDE()
    assert ss.sampling.get_sampler("unipc").order(sde) == 3  # UniP-2 + UniC-2
    assert ss.sampling.get_sampler("unipc", order=3, corrector=False).order(sde) == 3
    assert not ss.sampling.get_sampler("unipc").is_stochastic()
    smp = ss.sampling.UniPC(order=3)
    assert smp.step_orders(6) == [1, 2, 3, 3, 2, 1]
    assert ss.sampling.UniPC(order=3, lower_order_final=False).step_orders(6) == [1, 2, 3, 3, 3, 3]


# ---- shared checks for every new sampler -----------------------------------------------------------
NEW = [
    ("unipc", {}),
    ("unipc", dict(order=3, corrector=False, prediction="noise")),
]


@pytest.mark.parametrize("name,opts", NEW)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_new_samplers_count_their_evaluations(name, opts, dtype):
    calls = []
    sde = ss.VPSDE()
    tgt = _target(sde)

    def score(x, t):
        calls.append(tuple(t.shape))
        return tgt.score(x.double(), t.double()).to(x.dtype)

    smp = ss.sampling.get_sampler(name, **opts)
    res = ss.sample(score, sde, (5, 3), sampler=name, steps=7, seed=0, dtype=dtype, **opts)
    assert res.nfe == len(calls) == smp.evaluations(7, sde) + 1  # + the denoising evaluation
    assert all(c == (5,) for c in calls)
    assert res.x.dtype == dtype and bool(torch.isfinite(res.x).all())


class _Oscillator(ss.SDE):
    prior_std = 1.0

    def drift(self, x, t):
        return -torch.tanh(x)

    def diffusion(self, x, t):
        return torch.ones_like(x[..., :1])


@pytest.mark.parametrize("name", sorted({n for n, _ in NEW}))
def test_new_samplers_refuse_a_nonlinear_sde(name):
    with pytest.raises(ValueError, match=f"sampler '{name}' needs .*got _Oscillator; samplers that serve"):
        ss.sample(lambda x, t: -x, _Oscillator(), (4, 2), sampler=name, steps=5)


@pytest.mark.parametrize("name,opts,match", [
    ("unipc", dict(order=4), "order must be an integer"),
    ("unipc", dict(order=0), "order must be an integer"),
    ("unipc", dict(variant="bh3"), "variant must be one of"),
    ("unipc", dict(prediction="v"), "prediction must be one of"),
    ("unipc", dict(corrector="yes"), "corrector must be"),
    ("unipc", dict(lower_order_final=1.5), "lower_order_final must be"),
])
def test_new_samplers_bad_options_name_the_argument(name, opts, match):
    with pytest.raises(ValueError, match=match):
        ss.sample(lambda x, t: -x, ss.VPSDE(), (4, 2), sampler=name, steps=5, **opts)


def test_phi_functions():
    from scoresde.sampling.unipc import phi

    for z in (-3.0, -0.9, -1e-3, 0.0, 1e-4, 0.7, 2.5):
        exact1 = math.expm1(z) / z if z else 1.0
        assert abs(phi(1, z) - exact1) <= 1e-14
        if abs(z) > 0.1:
            assert abs(phi(3, z) - (math.exp(z) - 1 - z - z * z / 2) / z**3) <= 1e-12
    assert phi(2, 0.0) == 0.5 and abs(phi(3, 0.0) - 1 / 6) < 1e-16
