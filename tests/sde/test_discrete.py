"""DiscreteVPSDE: diffusers' schedules reproduced exactly at the grid times, DDPM's and DDIM's samplers
as samplers of the SDE, the interpolation's properties, the timestep maps and the errors."""

import json

import pytest
import torch

import scoresde as ss
from scoresde.models.specs import build_sde, sde_spec

F64 = torch.float64
BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]


def scheduler(kind="linear", cls="DDPMScheduler", **kw):
    diffusers = pytest.importorskip("diffusers")
    return getattr(diffusers, cls)(beta_schedule=kind, clip_sample=False, **kw)


@pytest.mark.parametrize("kind", BETA_SCHEDULES)
def test_reproduces_diffusers_alphas_cumprod_at_every_timestep(kind):
    sch = scheduler(kind)
    ref = sch.alphas_cumprod.double()
    n = sch.config.num_train_timesteps
    k = torch.arange(n)
    for sde in (ss.DiscreteVPSDE.from_diffusers(sch), ss.DiscreteVPSDE(betas=sch.betas)):
        assert sde.num_timesteps == n and sde.T == 1.0 and sde.eps == pytest.approx(1 / n)
        t = sde.t_from_timestep(k)
        torch.testing.assert_close(t, (k + 1).double() / n, rtol=0, atol=0)
        alpha, sigma = sde.marginal(t)
        assert (alpha.square() - ref).abs().max() < 1e-6  # betas=: float64 products vs diffusers' float32
        assert (sigma.square() - (1 - ref)).abs().max() < 1e-6
    exact = ss.DiscreteVPSDE.from_diffusers(sch)
    alpha, _ = exact.marginal(exact.t_from_timestep(k))
    assert (alpha.square() - ref).abs().max() < 1e-15  # the given values, to rounding
    # float32 times (a sampler's) stay within float32 resolution of the nodes
    alpha32, _ = exact.marginal(exact.t_from_timestep(k).float())
    assert alpha32.dtype == torch.float32 and (alpha32.double().square() - ref).abs().max() < 1e-6


@pytest.mark.parametrize("kind", BETA_SCHEDULES)
def test_the_interpolation_is_monotone_smooth_and_starts_at_the_data(kind):
    sde = ss.DiscreteVPSDE.from_diffusers(scheduler(kind))
    n = sde.num_timesteps
    t = torch.linspace(0, 1, 20 * n + 1, dtype=F64)
    B, beta = sde.integrated_beta(t), sde.beta(t)
    assert float(B[0]) == 0.0 and bool((beta >= 0).all()) and bool(torch.isfinite(beta).all())
    assert bool((B[1:] >= B[:-1]).all())
    # beta = B' is continuous at the nodes: the two one-sided values agree
    nodes = torch.arange(1, n, dtype=F64) / n
    h = 1e-9
    left, right = sde.beta(nodes - h), sde.beta(nodes + h)
    assert ((left - right).abs() / right).max() < 1e-4
    # and it is the derivative of B
    mid = (torch.arange(n, dtype=F64) + 0.37) / n
    fd = (sde.integrated_beta(mid + 1e-7) - sde.integrated_beta(mid - 1e-7)) / 2e-7
    torch.testing.assert_close(sde.beta(mid), fd, rtol=1e-5, atol=1e-6)
    # the log-SNR inverts at and between the nodes
    tt = torch.cat([sde.t_from_timestep(torch.arange(n)), mid.clamp(max=1)])
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(tt)), tt, rtol=0, atol=1e-12)


def test_the_forward_chain_between_nodes_is_ddpm_s_step():
    sch = scheduler("linear")
    sde = ss.DiscreteVPSDE.from_diffusers(sch)
    n = sde.num_timesteps
    x = torch.ones(n - 1, 1, dtype=F64)
    t = sde.t_from_timestep(torch.arange(1, n))
    F, G = sde.discretize(x, t, 1.0 / n)  # x_k = x_{k-1} + F + G z
    beta_k = sde.betas[1:]
    torch.testing.assert_close(1 + F.squeeze(1), (1 - beta_k).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(G.squeeze(1), beta_k.sqrt(), rtol=1e-9, atol=0)
    torch.testing.assert_close(ss.DiscreteVPSDE(betas=sch.betas).betas, sch.betas.double(), rtol=1e-12, atol=1e-15)
    assert (sde.betas - sch.betas.double()).abs().max() < 1e-6  # ratios of diffusers' float32 alphas_cumprod


def _as_float64(sch):
    """diffusers' scheduler arithmetic in float64 (its tables are float32), for an exact comparison."""
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod"):
        if isinstance(getattr(sch, name, None), torch.Tensor):
            setattr(sch, name, getattr(sch, name).double())
    return sch


def _eps_model(sde, score):
    """diffusers' epsilon network from the exact score: eps(x, k) = -sigma_{t_k} s(x, t_k)."""

    def eps(x, k):
        t = sde.t_from_timestep(torch.full((x.shape[0],), int(k)))
        return sde.to_eps(score(x, t), x, t, "score")

    return eps


@pytest.mark.parametrize("variance, variance_type", [("posterior", "fixed_small"), ("forward", "fixed_large")])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ancestral_sampling_on_the_timestep_grid_is_ddpm(variance, variance_type, steps):
    sch = scheduler("linear", variance_type=variance_type)
    sde = ss.DiscreteVPSDE.from_diffusers(sch)
    sch.set_timesteps(steps)
    _as_float64(sch)
    gmm = ss.analytic.ring_mixture(8)
    score, eps = gmm.score_fn(sde), _eps_model(sde, gmm.score_fn(sde))
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x, gen = x0.clone(), torch.Generator().manual_seed(5)
    for k in sch.timesteps:
        x = sch.step(eps(x, k), k, x, generator=gen).prev_sample  # the last step (k = 0) returns x0_hat
    res = ss.sample(score, sde, (32, 2), sampler="ancestral", variance=variance, grid=sde.t_from_timestep(sch.timesteps),
                    x_start=x0, generator=torch.Generator().manual_seed(5), dtype=F64)
    assert (res.x - x).abs().max() < 1e-10  # same noise draws, same chain
    assert res.nfe == steps


@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_first_order_dpm_solver_on_the_timestep_grid_is_ddim(prediction):
    sch = scheduler("squaredcos_cap_v2", cls="DDIMScheduler", set_alpha_to_one=True)
    sde = ss.DiscreteVPSDE.from_diffusers(sch)
    sch.set_timesteps(20)
    _as_float64(sch)
    gmm = ss.analytic.ring_mixture(8)
    score, eps = gmm.score_fn(sde), _eps_model(sde, gmm.score_fn(sde))
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = x0.clone()
    for k in sch.timesteps:
        x = sch.step(eps(x, k), k, x, eta=0.0).prev_sample
    res = ss.sample(score, sde, (32, 2), sampler="dpm_solver", order=1, prediction=prediction,
                    grid=sde.t_from_timestep(sch.timesteps), x_start=x0, dtype=F64)
    assert (res.x - x).abs().max() < 1e-10


def test_timestep_maps():
    sde = ss.DiscreteVPSDE(betas=torch.linspace(1e-4, 0.02, 1000))
    assert sde.t_from_timestep(999).dtype == F64 and float(sde.t_from_timestep(999)) == 1.0
    assert float(sde.t_from_timestep(-1)) == 0.0
    assert float(sde.t_from_timestep(499.5)) == pytest.approx(0.5005)
    k32 = torch.tensor([0.0, 10.5], dtype=torch.float32)
    assert sde.t_from_timestep(k32).dtype == torch.float32
    t = torch.linspace(0.001, 1, 17, dtype=F64)
    torch.testing.assert_close(sde.t_from_timestep(sde.timestep_from_t(t)), t, rtol=0, atol=1e-15)
    torch.testing.assert_close(sde.timestep_from_t(torch.tensor([0.001, 1.0], dtype=F64)),
                               torch.tensor([0.0, 999.0], dtype=F64))


def test_spec_round_trips_through_json_and_load_run_s_table():
    sde = ss.DiscreteVPSDE.from_diffusers(scheduler("scaled_linear"), eps=2e-3)
    spec = json.loads(json.dumps(sde_spec(sde)))
    again = build_sde(spec)
    assert type(again) is ss.DiscreteVPSDE and again.eps == 2e-3
    assert torch.equal(again.alphas_cumprod, sde.alphas_cumprod)
    t = torch.rand(100, dtype=F64)
    assert torch.equal(again.marginal(t)[0], sde.marginal(t)[0])


class _NoConfig:
    alphas_cumprod = torch.linspace(0.99, 0.01, 10)


class _Config:
    num_train_timesteps = 20


class _Mismatch(_NoConfig):
    config = _Config()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ss.DiscreteVPSDE(), "give exactly one of betas and alphas_cumprod"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1], alphas_cumprod=[0.9]), "give exactly one of betas and alphas_cumprod"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, 1.0, 0.2]), r"betas must lie in \(0, 1\), got betas\[1\] = 1.0"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, 0.0]), r"betas must lie in \(0, 1\), got betas\[1\] = 0.0"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, float("nan")]), r"betas must lie in \(0, 1\), got betas\[1\] = nan"),
        (lambda: ss.DiscreteVPSDE(alphas_cumprod=[0.9, 0.95, 0.5]),
         r"alphas_cumprod must be strictly decreasing \(each step adds noise\), got alphas_cumprod\[1\] = 0.95"),
        (lambda: ss.DiscreteVPSDE(alphas_cumprod=[1.0, 0.5]), r"alphas_cumprod must lie in \(0, 1\), got alphas_cumprod\[0\] = 1.0"),
        (lambda: ss.DiscreteVPSDE(alphas_cumprod=[0.9, 0.0]), r"alphas_cumprod must lie in \(0, 1\), got alphas_cumprod\[1\] = 0.0"),
        (lambda: ss.DiscreteVPSDE(betas="abc"), "betas must be a 1-D sequence of numbers, got 'abc'"),
        (lambda: ss.DiscreteVPSDE(betas=[[0.1, 0.2]]), r"betas must be a 1-D sequence of at least 2 numbers, got shape \(1, 2\)"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, 0.2], eps=1.5), r"eps must be a number in \(0, 1\)"),
        (lambda: ss.DiscreteVPSDE.from_diffusers(object()), "scheduler must be a diffusers noise scheduler with alphas_cumprod"),
        (lambda: ss.DiscreteVPSDE.from_diffusers(_NoConfig()), "got _NoConfig"),
        (lambda: ss.DiscreteVPSDE.from_diffusers(_Mismatch()),
         "scheduler.alphas_cumprod has 10 entries but config.num_train_timesteps = 20"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, 0.2]).t_from_timestep(2), r"k must lie in \[-1, N - 1\] = \[-1, 1\], got 2.0"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, 0.2]).t_from_timestep("3"), "k must be a timestep"),
        (lambda: ss.DiscreteVPSDE(betas=[0.1, 0.2]).timestep_from_t(1.5), r"t must lie in \[0, T\] = \[0, 1\]"),
    ],
)
def test_bad_input_is_refused(build, match):
    with pytest.raises(ss.ArgumentError, match=match):
        build()
