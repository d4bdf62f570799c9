"""Shared cases for the likelihood tests: the built-in SDEs, a custom LinearSDE and mixtures."""

import pytest
import torch

import scoresde as ss


def custom_linear_sde():
    # beta(t) = 1 + 4t, so alpha_1 = e^{-1.5}: not a built-in, marginals computed numerically
    return ss.LinearSDE(f=lambda t: -0.5 * (1 + 4 * t), g=lambda t: (1 + 4 * t).sqrt())


SDE_FACTORIES = {
    "vp": lambda: ss.VPSDE(),
    "vp_cosine": lambda: ss.VPSDE(schedule="cosine"),
    "subvp": lambda: ss.SubVPSDE(),
    "ve": lambda: ss.VESDE(),
    "custom_linear": custom_linear_sde,
}


def mixture(dim):
    if dim == 2:
        return ss.analytic.ring_mixture(8, radius=4.0, std=0.3)
    return ss.analytic.random_mixture(dim=dim, n_components=6, seed=3)


def data(gmm, sde, n, seed=0):
    """``n`` exact samples of p_eps (the density log_likelihood reports)."""
    gen = torch.Generator().manual_seed(seed)
    return gmm.sample(n, generator=gen, t=sde.eps, sde=sde)


@pytest.fixture(params=list(SDE_FACTORIES))
def sde_name(request):
    return request.param


class FunctorchRefused(torch.autograd.Function):
    """sin as an old-style autograd.Function (no setup_context): functorch refuses it, plain autograd
    does not (the networks vmap cannot batch)."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y.sin()

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return y.cos() * grad
