r"""The analytic Gaussian mixture as a data set, with its exact density.

:class:`MixtureDataset` wraps a :class:`~scoresde.analytic.GaussianMixture`: it holds a fixed
seeded draw (train or held-out splits come from different seeds) and exposes the mixture's
exact :math:`\log p_0(x) = \log\sum_k w_k\,\mathcal N(x;\mu_k,\mathrm{diag}\,s_k^2)`, the
reference against which trained models' likelihoods are measured. Each point carries the
component it was drawn from as its class label (``labels``, ``num_classes = K``), so the
mixture is also exact ground truth for class-conditional models: :math:`p(x \mid y = k)` is
component :math:`k`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..analytic import GaussianMixture
from ..errors import ArgumentError, check_dtype, check_int, check_seed
from .images import TensorData


class MixtureDataset(TensorData):
    """``n`` samples of ``gmm`` drawn with ``seed`` (in ``dtype``), their components as ``labels``,
    plus the exact density."""

    def __init__(self, gmm: GaussianMixture, n: int = 10_000, *, seed: int = 0, dtype: torch.dtype = torch.float32):
        if not isinstance(gmm, GaussianMixture):
            raise ArgumentError(f"gmm must be a scoresde.analytic.GaussianMixture, got {type(gmm).__name__}")
        n, seed, dtype = check_int("n", n), check_seed("seed", seed), check_dtype("dtype", dtype)
        self.gmm = gmm
        x, k = gmm.sample(n, generator=torch.Generator(device=gmm.means.device).manual_seed(seed), return_components=True)
        super().__init__(x.to(dtype), labels=k, num_classes=gmm.n_components)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact :math:`\\log p_0(x)` of the clean mixture in nats, shape ``x.shape[:-1]`` (float64)."""
        mu, s, w = (p.to(device=x.device, dtype=torch.float64) for p in (self.gmm.means, self.gmm.stds, self.gmm.weights))
        x = x.to(torch.float64)
        z = (x[..., None, :] - mu) / s
        comp = -0.5 * (z.square() + 2 * s.log() + math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(w.log() + comp, dim=-1)

    def nll(self, x: Tensor | None = None) -> Tensor:
        """Mean exact negative log-likelihood (nats) of ``x`` (default: this data set)."""
        return -self.log_prob(self.data if x is None else x).mean()
