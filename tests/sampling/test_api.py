"""The sample() entry point: NFE accounting, trajectories, dtypes, shapes, grids, registry."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as ss
from scoresde.sampling import Sampler, time_grid

SDE = ss.VPSDE()


def gaussian_score(x, t):
    """Exact score of p_t for standard-normal-per-coordinate data shifted to mean 0 with std 0.5."""
    a, s = SDE.marginal(t)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return -x / (a.reshape(shape) ** 2 * 0.25 + s.reshape(shape) ** 2)


def counting(fn):
    calls = []

    def wrapped(x, t):
        calls.append(tuple(t.shape))
        return fn(x, t)

    return wrapped, calls


@pytest.mark.parametrize(
    "name,opts,expected",
    [
        ("euler_maruyama", {}, 10),
        ("reverse_diffusion", {}, 10),
        ("ancestral", {}, 10),
        ("pc", dict(corrector_steps=2), 30),
        ("pc", dict(corrector="none"), 10),
        ("annealed_langevin", dict(n_steps_each=3), 30),
        ("heun", {}, 20),
        ("dpm_solver", dict(order=2, method="multistep"), 10),
        ("dpm_solver", dict(order=3, method="singlestep"), 30),
        ("dpm_solver", dict(order=2, method="singlestep"), 20),
        ("ode", dict(method="euler"), 10),
        ("ode", dict(method="rk4"), 40),
        ("ode", dict(method="midpoint"), 20),
    ],
)
def test_nfe_counts_every_score_call(name, opts, expected):
    fn, calls = counting(gaussian_score)
    res = ss.sample(fn, SDE, (6, 3), sampler=name, steps=10, seed=0, **opts)
    assert res.nfe == len(calls) == expected + 1  # + the final denoising evaluation
    assert all(c == (6,) for c in calls)  # t always reaches score_fn with shape (batch,)
    fn, calls = counting(gaussian_score)
    res = ss.sample(fn, SDE, (6, 3), sampler=name, steps=10, seed=0, denoise=False, **opts)
    assert res.nfe == len(calls) == expected


def test_adaptive_ode_and_torchsde_count_their_calls():
    fn, calls = counting(gaussian_score)
    res = ss.sample(fn, SDE, (6, 3), sampler="ode", seed=0)
    assert res.nfe == len(calls) > 10
    fn, calls = counting(gaussian_score)
    res = ss.sample(fn, SDE, (6, 3), sampler="torchsde", steps=50, seed=0, denoise=False)
    assert res.nfe == len(calls) >= 50


@pytest.mark.parametrize("name", ["euler_maruyama", "heun", "dpm_solver", "pc", "ode"])
def test_trajectory(name):
    opts = dict(method="euler") if name == "ode" else {}
    res = ss.sample(gaussian_score, SDE, (5, 2), sampler=name, steps=8, seed=0, return_trajectory=True,
                    denoise=False, **opts)
    traj = res.trajectory
    assert traj.times.shape == (9,) and traj.states.shape == (9, 5, 2)
    torch.testing.assert_close(traj.times, res.times)
    torch.testing.assert_close(traj.states[-1], res.x)
    assert bool((traj.times[1:] < traj.times[:-1]).all())
    no_traj = ss.sample(gaussian_score, SDE, (5, 2), sampler=name, steps=8, seed=0, denoise=False, **opts)
    assert no_traj.trajectory is None
    torch.testing.assert_close(no_traj.x, res.x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["euler_maruyama", "ancestral", "heun", "dpm_solver", "ode", "pc", "torchsde"])
def test_dtype_follows_request(name, dtype):
    res = ss.sample(gaussian_score, SDE, (4, 3), sampler=name, steps=6, seed=0, dtype=dtype)
    assert res.x.dtype == dtype and bool(torch.isfinite(res.x).all())


@given(
    event=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    batch=st.integers(1, 4),
    name=st.sampled_from(["euler_maruyama", "reverse_diffusion", "ancestral", "heun", "dpm_solver", "pc"]),
    sde_kind=st.sampled_from(["vp", "subvp", "ve"]),
)
def test_any_event_shape_and_sde(event, batch, name, sde_kind):
    sde = {"vp": ss.VPSDE(), "subvp": ss.SubVPSDE(), "ve": ss.VESDE(0.01, 5.0)}[sde_kind]
    gmm_score = ss.analytic.GaussianMixture(torch.zeros(1, 1, dtype=torch.float64), 0.5).score_fn(sde)

    def score(x, t):  # the 1-D score applied per element, for any event shape
        flat = x.reshape(-1, 1)
        return gmm_score(flat, t.repeat_interleave(flat.shape[0] // x.shape[0])).reshape(x.shape)

    shape = (batch, *event)
    res = ss.sample(score, sde, shape, sampler=name, steps=6, seed=1, dtype=torch.float64)
    assert res.x.shape == shape and bool(torch.isfinite(res.x).all())


def test_default_steps_and_grids():
    assert ss.sample(gaussian_score, SDE, (2, 2), sampler="heun", seed=0).nfe == 2 * 50 + 1
    assert ss.sample(gaussian_score, SDE, (2, 2), sampler="dpm_solver", seed=0).nfe == 20 + 1
    res = ss.sample(gaussian_score, SDE, (2, 2), sampler="dpm_solver", steps=7, seed=0, dtype=torch.float64)
    lam = SDE.log_snr(res.times)
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(7))  # default: uniform in log-SNR
    # down to where the noise level sigma/alpha is 0.01 (t ~ 9e-4 on this VP), not to SDE.eps
    a, s = SDE.marginal(res.times[-1])
    assert abs(float(s / a) - 0.01) < 1e-9 and float(res.times[-1]) > 50 * SDE.eps


def test_time_grids():
    for kind in ["uniform", "log_snr", "edm"]:
        t = time_grid(SDE, 12, 1.0, 1e-3, kind)
        assert t.shape == (13,) and float(t[0]) == 1.0 and float(t[-1]) == 1e-3
        assert bool((t[1:] < t[:-1]).all())
    t = time_grid(SDE, 12, 1.0, 1e-3, "edm", rho=7.0)
    sig = (-SDE.log_snr(t)).exp()
    ramp = sig ** (1 / 7)
    torch.testing.assert_close(ramp.diff(), ramp.diff().mean().expand(12))  # sigma^(1/rho) uniform
    user = ss.sample(gaussian_score, SDE, (2, 2), grid=[1.0, 0.5, 0.1, 0.01], seed=0)
    assert user.nfe == 3 + 1
    torch.testing.assert_close(user.times, torch.tensor([1.0, 0.5, 0.1, 0.01]))
    with pytest.raises(ValueError, match="grid='log_snr' needs a LinearSDE"):
        class Custom(ss.SDE):
            prior_std = 1.0

            def drift(self, x, t):
                return -x

            def diffusion(self, x, t):
                return torch.ones_like(x)

        time_grid(Custom(), 5, 1.0, 1e-3, "log_snr")


def test_registry_and_sampler_instances():
    names = ss.available_samplers()
    assert set(names) >= {"euler_maruyama", "reverse_diffusion", "ancestral", "pc", "annealed_langevin", "ode",
                          "heun", "dpm_solver", "torchsde"}
    orders = {n: ss.sampling.get_sampler(n).order(SDE) for n in names}  # orders are declared per SDE
    assert orders["euler_maruyama"] == 1 and orders["heun"] == 2 and orders["ode"] == 5
    assert ss.sampling.get_sampler("dpm_solver", order=3).order(SDE) == 3
    inst = ss.sampling.DPMSolver(order=1)
    a = ss.sample(gaussian_score, SDE, (3, 2), sampler=inst, steps=5, seed=0)
    b = ss.sample(gaussian_score, SDE, (3, 2), sampler="dpm_solver", order=1, steps=5, seed=0)
    torch.testing.assert_close(a.x, b.x)
    assert a.sampler is inst and isinstance(a.sampler, Sampler)


def test_denoise_is_tweedie():
    raw = ss.sample(gaussian_score, SDE, (4, 2), steps=10, seed=0, denoise=False)
    den = ss.sample(gaussian_score, SDE, (4, 2), steps=10, seed=0)
    t = torch.tensor(SDE.eps)
    a, s = SDE.marginal(t)
    expected = (raw.x + s**2 * gaussian_score(raw.x, t.expand(4))) / a
    torch.testing.assert_close(den.x, expected)


def test_progress_bar_runs(capsys):
    res = ss.sample(gaussian_score, SDE, (2, 2), steps=5, seed=0, progress=True)
    assert res.x.shape == (2, 2)


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
@pytest.mark.parametrize("steps", [100, 333])
def test_torchsde_methods_and_step_counts(method, steps):
    """Any step count works (a round-off final step once hung torchsde's Brownian interval)."""
    fn, calls = counting(gaussian_score)
    res = ss.sample(fn, SDE, (4, 2), sampler="torchsde", method=method, steps=steps, seed=0, denoise=False)
    assert res.nfe == len(calls) >= steps
    assert bool(torch.isfinite(res.x).all())


class _CubicSDE(ss.SDE):
    """A state-dependent diffusion (its reverse drift needs autograd for d(g^2)/dx)."""

    prior_std = 1.0
    state_dependent_diffusion = True

    def drift(self, x, t):
        return 0.5 * x - 0.5 * x**3

    def diffusion(self, x, t):
        return (1 + x.square()).sqrt()


@pytest.mark.parametrize("name", ["euler_maruyama", "reverse_diffusion", "pc", "ode", "torchsde"])
def test_samples_carry_no_autograd_graph_by_default(name):
    """Without differentiable=True a sampler keeps no graph, even with grad mode on and a score
    network whose parameters require gradients (the graph would grow with the steps)."""
    net = ss.models.MLP(2, hidden=16, depth=2)
    assert torch.is_grad_enabled() and next(net.parameters()).requires_grad
    for sde in (SDE, _CubicSDE()):
        opts = {} if name == "ode" else dict(steps=10)
        res = ss.sample(lambda x, t: 0.1 * net(x, t) - x, sde, (8, 2), sampler=name, seed=0, **opts)
        assert not res.x.requires_grad and res.x.grad_fn is None, (name, type(sde).__name__)


def test_differentiable_sample_backpropagates_to_the_score_parameters():
    net = ss.models.MLP(2, hidden=16, depth=2)
    x_start = torch.randn(8, 2, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    for sde in (SDE, _CubicSDE()):
        res = ss.sample(lambda x, t: 0.1 * net(x, t) - x, sde, (8, 2), sampler="reverse_diffusion", steps=5, seed=0,
                        x_start=x_start, differentiable=True)
        grads = torch.autograd.grad(res.x.square().sum(), [x_start, *net.parameters()])
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert float(grads[0].abs().sum()) > 0 and float(grads[-1].abs().sum()) > 0
    with torch.no_grad():  # the caller's no_grad does not stop an explicit request
        res = ss.sample(lambda x, t: net(x, t), SDE, (8, 2), steps=3, seed=0, differentiable=True)
    assert res.x.requires_grad
