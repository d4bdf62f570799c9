"""Regression tests for the wrong answers the few-step measurement found, each one a test that
fails on the old behaviour (checked by switching the fix off where an option allows)."""

import pytest
import torch
from sampling_helpers import GaussianTarget

import scoresde as ss
from scoresde.sampling.base import end_time_at_level

SDE = ss.VPSDE()


def _ode_map_errors(order, grid, steps_list, **opts):
    """Max error at eps = 1e-5 against the exact PF-ODE map of 64 prior draws (2-D Gaussian, std 0.5)."""
    target = GaussianTarget(SDE, torch.zeros(2, dtype=torch.float64), 0.25 * torch.eye(2, dtype=torch.float64))
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = target.ode_solution(x_T, SDE.T, 1e-5)
    errors = []
    for n in steps_list:
        res = ss.sample(target.score, SDE, x_T.shape, sampler="dpm_solver", order=order, grid=grid, steps=n,
                        x_start=x_T, eps=1e-5, denoise=False, **opts)
        errors.append(float((res.x - exact).abs().max()))
    return errors


@pytest.mark.parametrize("order", [2, 3])
def test_multistep_on_a_uniform_grid_improves_with_steps(order):
    """On a grid uniform in t the last VP step spans ~5 log-SNR units after steps of ~0.5: the
    multistep extrapolation across it made 20 steps ten times worse than 10 (measured 0.34 -> 1.5
    at order 2, 0.32 -> 3.4 at order 3). With the step-ratio rule (measured: 0.34, 0.066, 0.005,
    0.006 at order 2; 0.32, 0.079, 0.040, 0.018 at order 3) more steps never hurt by more than
    round-off of the last, first-order step."""
    errors = _ode_map_errors(order, "uniform", [10, 20, 40, 80])
    assert errors[1] < 0.5 * errors[0] and max(errors[2:]) < 0.25 * errors[0], errors
    assert errors[-1] < 0.03, errors


def test_without_the_step_ratio_rule_the_uniform_grid_fails():
    """The same run with the rule off (lower_order_final=False) shows the failure the test guards."""
    errors = _ode_map_errors(3, "uniform", [10, 20], lower_order_final=False)
    assert errors[1] > 1.0, errors


def test_step_orders_drop_only_where_a_step_outgrows_the_previous_one():
    smp = ss.sampling.get_sampler("dpm_solver", order=3)
    assert smp.step_orders(torch.linspace(-5, 5, 21)) == [1, 2] + [3] * 18  # equal steps, >= 15 of them
    lams = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 20.0])
    assert smp.step_orders(lams)[-1] == 1  # a step 5x longer than the one before it
    assert smp.step_orders(lams)[-2] == 3


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VPSDE(schedule="cosine"), ss.SubVPSDE(), ss.VESDE()],
                         ids=["vp", "vp-cosine", "subvp", "ve"])
def test_few_step_end_time_is_at_noise_level_one_hundredth(sde):
    """The default end of dpm_solver and heun: sigma/alpha = 0.01 (VP: t ~ 9e-4 instead of 1e-5,
    which made 10-evaluation runs 3-5x worse); VE already starts at sigma_min = 0.01."""
    t = end_time_at_level(sde)
    for name in ["dpm_solver", "heun"]:
        assert ss.sampling.get_sampler(name).default_eps(sde) == t
    if isinstance(sde, ss.VESDE):
        assert t == sde.eps
    else:
        a, s = sde.marginal(torch.tensor(t, dtype=torch.float64))
        assert abs(float(s / a) - 0.01) < 1e-8 and t > 10 * sde.eps


def test_torchsde_euler_spends_what_euler_maruyama_spends():
    """torchsde's shape check before a solve used to cost one more evaluation than the steps."""
    score = lambda x, t: -x  # noqa: E731
    for steps in [1, 5, 12]:
        em = ss.sample(score, SDE, (4, 2), sampler="euler_maruyama", steps=steps, seed=0).nfe
        for method in ["euler", "milstein"]:
            assert ss.sample(score, SDE, (4, 2), sampler="torchsde", method=method, steps=steps, seed=0).nfe == em
    assert ss.sample(score, SDE, (4, 2), sampler="torchsde", method="srk", steps=1, seed=0).nfe == 11


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_tracker_flags_nan_and_inf_but_not_large_finite_states(dtype):
    """The tracker reduces a state to its float64 sum: NaN, +inf, -inf and +inf with -inf (whose
    sum is NaN) are flagged at the time they first appear; the largest finite float32 values are not."""
    from scoresde.flow import NonFiniteTracker

    big = torch.finfo(torch.float32).max
    for bad in [float("nan"), float("inf"), -float("inf")]:
        tr = NonFiniteTracker()
        x = torch.ones(50, 4, dtype=dtype)
        tr.watch(torch.tensor(0.9), x)
        x[3, 1] = bad
        tr.watch(torch.tensor(0.5), x)
        tr.watch(torch.tensor(0.1), torch.ones(50, 4, dtype=dtype))
        assert tr.first_time() == 0.5
    both = torch.zeros(50, 4, dtype=dtype)
    both[0, 0], both[1, 1] = float("inf"), -float("inf")
    tr = NonFiniteTracker()
    tr.watch(torch.tensor(0.3), both)
    assert tr.first_time() == pytest.approx(0.3)
    tr = NonFiniteTracker()
    tr.watch(torch.tensor(0.3), torch.full((1000, 64), big, dtype=dtype), torch.full((1000,), -big, dtype=dtype))
    assert tr.first_time() is None


@pytest.mark.parametrize("first_bad", [5, 255, 256, 700])
def test_non_finite_tracker_keeps_the_first_time_across_folds(first_bad):
    """States are folded into the record every FOLD_EVERY = 256: the first bad one is reported
    wherever it falls, and later bad ones do not replace it."""
    from scoresde.flow import NonFiniteTracker

    tr = NonFiniteTracker()
    for k in range(1000):
        x = torch.ones(8, 2)
        if k in (first_bad, first_bad + 3, 900):
            x[0, 0] = float("nan")
        tr.watch(torch.tensor(1.0 - k / 1000, dtype=torch.float64), x)
    assert tr.first_time() == pytest.approx(1.0 - first_bad / 1000)
