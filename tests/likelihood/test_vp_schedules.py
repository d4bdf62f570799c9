"""Exact likelihoods under the newer VP schedules and a discrete DDPM schedule (issue 12's bar).

Exact score, exact prior, exact trace, float64 and tight tolerances (rtol = atol = 1e-8): at the
default 1e-5 the ODE solver's own error is about 1e-3 nats. Measured at 1e-8 (max |error| over
32 points): sigmoid 6e-8 / 1.5e-6 (2-D / 8-D), shifted cosine 7e-8 / 1.3e-6, DiscreteVPSDE of
DDPM's linear betas 5e-6 / 2.7e-5 and of squaredcos_cap_v2 1e-5 / 6.3e-5 (its beta is continuous but its slope jumps at the nodes,
so dopri5 steps more finely past the N nodes: 1200-1750 evaluations against 300-470).
"""

import pytest
import torch

import scoresde as ss

from .conftest import data, mixture


def discrete_linear():
    return ss.DiscreteVPSDE(betas=torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


def discrete_cosine():
    diffusers = pytest.importorskip("diffusers")
    return ss.DiscreteVPSDE.from_diffusers(diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2"))


SDES = {
    "discrete_linear": discrete_linear,
    "discrete_cosine": discrete_cosine,
    "sigmoid": lambda: ss.VPSDE(schedule="sigmoid"),
    "shifted_cosine": lambda: ss.VPSDE(schedule="shifted_cosine", shift=0.5),
}


@pytest.mark.parametrize("dim", [2, 8])
@pytest.mark.parametrize("name", list(SDES))
def test_exact_score_exact_prior_likelihood_within_1e_4_nats(name, dim):
    sde = SDES[name]()
    gmm = mixture(dim)
    x = data(gmm, sde, 32, seed=dim)
    res = ss.log_likelihood(gmm.score_fn(sde), sde, x, trace="exact", rtol=1e-8, atol=1e-8,
                            prior_log_prob=gmm.prior_log_prob(sde))
    err = (res.log_p - gmm.log_prob(x, sde.eps, sde)).abs()
    assert float(err.max()) <= 1e-4, f"{name} {dim}-D: max |error| {float(err.max()):.2e} nats (nfe {res.nfe})"
