"""Bad input raises ValueError naming the argument and the value received."""

import pytest
import torch

import scoresde as ss


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ss.VPSDE(beta_min=0.0), "beta_min must be a positive finite number, got 0.0"),
        (lambda: ss.VPSDE(beta_min=-1.0), "beta_min must be a positive finite number, got -1.0"),
        (lambda: ss.VPSDE(beta_max=0), "beta_max must be a positive finite number, got 0"),
        (lambda: ss.VPSDE(0.5, 0.1), "beta_max must be >= beta_min=0.5, got 0.1"),
        (lambda: ss.VPSDE(schedule="quadratic"), "schedule must be one of 'linear', 'scaled_linear', 'cosine', 'sigmoid', 'shifted_cosine'; got 'quadratic'"),
        (lambda: ss.VPSDE(eps=0.0), "eps must be a number in \\(0, 1\\), got 0.0"),
        (lambda: ss.SubVPSDE(beta_min=float("nan")), "beta_min must be a positive finite number, got nan"),
        (lambda: ss.VESDE(sigma_min=0.0), "sigma_min must be a positive finite number, got 0.0"),
        (lambda: ss.VESDE(sigma_max=-2.0), "sigma_max must be a positive finite number, got -2.0"),
        (lambda: ss.VESDE(5.0, 5.0), "sigma_min must be smaller than sigma_max=5, got 5.0"),
        (lambda: ss.VESDE(50.0, 1.0), "sigma_min must be smaller than sigma_max=1, got 50.0"),
        (lambda: ss.LinearSDE(1.0, lambda t: 1.0), "f must be callable"),
        (lambda: ss.LinearSDE(lambda t: 0.0, lambda t: -1.0), "g must be non-negative"),
        (lambda: ss.LinearSDE(lambda t: 1 / t, lambda t: 1.0), "f and g must be finite"),
        (lambda: ss.LinearSDE(lambda t: 0.0, lambda t: 1.0, T=-1), "T must be a positive finite number, got -1"),
        (lambda: ss.LinearSDE(lambda t: 0.0, lambda t: 1.0, sigma0=-0.1), "sigma0 must be a finite number >= 0"),
        (lambda: ss.LinearSDE(lambda t: 0.0, lambda t: 1.0, eps=2.0), "eps must be a number in \\(0, 1\\), got 2.0"),
        (lambda: ss.LinearSDE(lambda t: torch.ones(3), lambda t: 1.0), r"f\(t\) must return a number or a tensor of t's shape"),
    ],
)
def test_bad_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


SDES = [ss.VPSDE(), ss.VPSDE(schedule="cosine"), ss.SubVPSDE(), ss.VESDE(),
        ss.LinearSDE(lambda t: -t, lambda t: 1.0)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_time_outside_range(sde):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\] = \[0, 1\], got 1.5"):
        sde.marginal(1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\] = \[0, 1\], got -0.25"):
        sde.drift(x, torch.tensor([0.5, -0.25]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\] = \[0, 1\], got nan"):
        sde.diffusion(x, torch.tensor(float("nan")))


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_mismatched_shapes_and_integer_dtypes(sde):
    with pytest.raises(ValueError, match=r"t must be a scalar or have the leading \(batch\) shape of x, got t.shape=\(3,\) for x.shape=\(4, 2\)"):
        sde.marginal_prob(torch.zeros(4, 2), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor, got dtype torch.int64"):
        sde.marginal_prob(torch.zeros(4, 2, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="t must be a floating-point tensor, got dtype torch.int64"):
        sde.marginal(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="t must be a number or a floating-point tensor, got '0.5'"):
        sde.marginal("0.5")
    with pytest.raises(ValueError, match="z must be a floating-point tensor"):
        sde.prior_log_prob(torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"dtype must be a floating-point torch.dtype .*, got torch.int64"):
        sde.prior_sample((2, 2), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"shape must be a non-empty sequence of positive integers, got \(\)"):
        sde.prior_sample(())


def test_score_fn_of_the_wrong_shape_is_reported():
    rev = ss.VPSDE().reverse(lambda x, t: x[:, :1])
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of x's shape \(4, 2\), got \(4, 1\)"):
        rev.drift(torch.zeros(4, 2), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="score_fn must be callable"):
        ss.VPSDE().reverse("not a function")


def test_torchsde_integrate_checks_the_time_direction():
    sde = ss.VPSDE()
    with pytest.raises(ValueError, match="times must increase for a forward SDE"):
        ss.sde.torchsde_integrate(sde, torch.zeros(2, 1), [1.0, 0.5])
    with pytest.raises(ValueError, match="times must decrease"):
        ss.sde.torchsde_integrate(sde.reverse(lambda x, t: -x), torch.zeros(2, 1), [0.5, 1.0])
