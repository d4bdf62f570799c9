"""Bad input gets a clear error naming the argument and the value; NaN names the time reached."""

import pytest
import torch

import scoresde as ss
from scoresde.sampling import NonFiniteError

SDE = ss.VPSDE()
GMM = ss.analytic.ring_mixture()
SCORE = GMM.score_fn(SDE)


class OscillatorSDE(ss.SDE):
    """A nonlinear SDE (no closed-form kernel): dx = -tanh(x) dt + dW."""

    prior_std = 1.0

    def drift(self, x, t):
        return -torch.tanh(x)

    def diffusion(self, x, t):
        return torch.ones_like(x[..., :1])


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError, match="unknown sampler 'eulr'") as err:
        ss.sample(SCORE, SDE, (4, 2), sampler="eulr")
    for name in ss.available_samplers():
        assert name in str(err.value)


@pytest.mark.parametrize("steps", [0, -3])
def test_non_positive_steps(steps):
    with pytest.raises(ValueError, match=f"steps must be an integer >= 1, got {steps}"):
        ss.sample(SCORE, SDE, (4, 2), steps=steps)


def test_non_integer_steps():
    with pytest.raises(ValueError, match="steps must be an integer"):
        ss.sample(SCORE, SDE, (4, 2), steps=10.5)


@pytest.mark.parametrize("name", ["dpm_solver", "heun", "ancestral", "annealed_langevin"])
def test_sampler_that_needs_a_linear_sde(name):
    sde = OscillatorSDE()
    with pytest.raises(ValueError, match=f"sampler '{name}' needs a linear SDE.*got OscillatorSDE"):
        ss.sample(lambda x, t: -x, sde, (4, 2), sampler=name, steps=5)


def test_nonlinear_sde_is_served_by_generic_samplers():
    sde = OscillatorSDE()
    for name in ["euler_maruyama", "reverse_diffusion", "pc", "ode", "torchsde"]:
        res = ss.sample(lambda x, t: -x, sde, (4, 2), sampler=name, steps=5, seed=0, dtype=torch.float64)
        assert res.x.shape == (4, 2) and bool(torch.isfinite(res.x).all())


def test_score_fn_with_wrong_shape():
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of x's shape \(4, 2\), got \(4,\)"):
        ss.sample(lambda x, t: x.sum(1), SDE, (4, 2), steps=3)


@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "heun", "dpm_solver", "ancestral"])
def test_nan_names_the_time_reached(name):
    def score(x, t):  # NaN once t drops below 0.5
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(NonFiniteError, match=r"non-finite values.*first seen at t=0\.4"):
        ss.sample(score, SDE, (4, 2), sampler=name, steps=20, grid="uniform", seed=0, check_every=0)


def test_nan_with_adaptive_ode_names_the_time():
    def score(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(NonFiniteError, match=r"non-finite \(NaN or inf\) at t=0\.[45]"):
        ss.sample(score, SDE, (4, 2), sampler="ode", seed=0)


def test_nan_stops_early_when_checked_periodically():
    calls = []

    def score(x, t):
        calls.append(1)
        return torch.full_like(x, float("nan"))

    with pytest.raises(NonFiniteError, match="first seen at t=0.999"):
        ss.sample(score, SDE, (4, 2), steps=1000, seed=0, check_every=10)
    assert len(calls) == 10  # stopped at the first host check, not after 1000 steps


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampler="pc", snr=-1.0), "snr must be a finite number >= 0, got -1.0"),
        (dict(sampler="pc", predictor="rk4"), "predictor must be one of"),
        (dict(sampler="dpm_solver", order=4), "order must be 1, 2 or 3, got 4"),
        (dict(sampler="dpm_solver", prediction="v"), "prediction must be one of"),
        (dict(sampler="ode", method="rk45"), "method must be a torchdiffeq solver"),
        (dict(sampler="ode", rtol=0.0), "rtol must be a number in"),
        (dict(sampler="torchsde", method="reversible_heun"), "method must be one of"),
        (dict(sampler="heun", churn=-1), "churn must be a finite number >= 0"),
        (dict(grid="cosine"), "grid must be one of"),
        (dict(grid=[1.0, 0.5, 0.7]), "grid must be strictly decreasing"),
        (dict(eps=0.0), "eps must lie in"),
        (dict(t_start=2.0), "t_start must lie in"),
        (dict(seed=[1, 2]), "seed must be an integer or a sequence of 4 integers"),
        (dict(seed=1, generator=torch.Generator()), "give seed or generator, not both"),
        (dict(dtype=torch.int64), "dtype must be a floating-point dtype"),
        (dict(mask=torch.ones(4, 2, dtype=torch.bool)), "inpainting needs both mask and known"),
        (dict(sampler="ode", mask=torch.ones(2, dtype=torch.bool), known=torch.zeros(2)), "cannot apply inpaint='replacement'"),
        (dict(x_start=torch.zeros(3, 2)), r"must have shape \(4, 2\)"),
    ],
)
def test_bad_options(kwargs, match):
    kwargs = dict(kwargs)
    kwargs.setdefault("steps", 5) if kwargs.get("sampler") != "ode" else None
    with pytest.raises(ValueError, match=match):
        ss.sample(SCORE, SDE, (4, 2), **kwargs)


def test_bad_shape_and_sde():
    with pytest.raises(ValueError, match="shape must be"):
        ss.sample(SCORE, SDE, (0, 2))
    with pytest.raises(ValueError, match="sde must be a scoresde.SDE"):
        ss.sample(SCORE, "vp", (4, 2))
    with pytest.raises(ValueError, match="score_fn must be callable"):
        ss.sample(None, SDE, (4, 2))
