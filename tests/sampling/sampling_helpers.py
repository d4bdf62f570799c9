"""Closed-form Gaussian targets and sample-quality checks shared by the sampler tests."""

from __future__ import annotations

import torch
from torch import Tensor

import scoresde as ss
from scoresde import metrics


class GaussianTarget:
    r"""Data :math:`x_0 \sim \mathcal N(m, \Sigma)` (full covariance) under a linear SDE.

    :math:`p_t = \mathcal N(\alpha_t m, \alpha_t^2\Sigma + \sigma_t^2 I)`, so the score, the
    probability-flow ODE's solution and the inpainting conditional are all closed form.
    """

    def __init__(self, sde: ss.LinearSDE, mean: Tensor, cov: Tensor):
        self.sde, self.mean, self.cov = sde, mean.double(), cov.double()
        self.dim = len(mean)
        self._w, self._v = torch.linalg.eigh(self.cov)  # cov = V diag(w) V^T: p_t's precision is diagonal in V

    def cov_t(self, t: Tensor) -> Tensor:
        a, s = self.sde.marginal(t)
        eye = torch.eye(self.dim, dtype=t.dtype)
        return a[..., None, None] ** 2 * self.cov.to(t.dtype) + s[..., None, None] ** 2 * eye

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        a, s = self.sde.marginal(t)
        v, w = self._v.to(x.dtype), self._w.to(x.dtype)
        diff = (x - a[:, None] * self.mean.to(x.dtype)) @ v
        return (-diff / (a[:, None] ** 2 * w + s[:, None] ** 2)) @ v.T

    def ode_solution(self, x_T: Tensor, t_from: float, t_to: float) -> Tensor:
        r"""Exact PF-ODE map :math:`x_{t_1} = \alpha_1 m + C_1^{1/2} C_0^{-1/2}(x_{t_0} - \alpha_0 m)` (commuting C's)."""
        def sqrtm(c, inv=False):
            w, v = torch.linalg.eigh(c)
            p = w.rsqrt() if inv else w.sqrt()
            return v @ torch.diag(p) @ v.T
        t0 = torch.tensor(t_from, dtype=torch.float64)
        t1 = torch.tensor(t_to, dtype=torch.float64)
        a0, _ = self.sde.marginal(t0)
        a1, _ = self.sde.marginal(t1)
        A = sqrtm(self.cov_t(t1)) @ sqrtm(self.cov_t(t0), inv=True)
        return a1 * self.mean + (x_T.double() - a0 * self.mean) @ A.T

    def sample_t(self, n: int, t: float, generator: torch.Generator) -> Tensor:
        tt = torch.tensor(t, dtype=torch.float64)
        a, _ = self.sde.marginal(tt)
        L = torch.linalg.cholesky(self.cov_t(tt))
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return a * self.mean + z @ L.T


def fit_slope(steps, errors) -> float:
    """Least-squares slope of log(error) against log(steps), negated (the convergence order)."""
    x = torch.log(torch.tensor(steps, dtype=torch.float64))
    y = torch.log(torch.tensor(errors, dtype=torch.float64))
    xc = x - x.mean()
    return float(-(xc * (y - y.mean())).sum() / xc.square().sum())


class MixtureReference:
    """Independent true sample sets of one size for a mixture, and their own spread of metrics."""

    def __init__(self, gmm, n: int = 4000, sets: int = 8, seed: int = 12345):
        gen = torch.Generator().manual_seed(seed)
        self.gmm = gmm
        self.sets = [gmm.sample(n, generator=gen) for _ in range(sets)]
        pairs = [(self.sets[2 * i], self.sets[2 * i + 1]) for i in range(sets // 2)]
        # reference: mean SW between two independent true sets (a single pair is too noisy)
        self.sw_ref = float(torch.stack([metrics.sliced_wasserstein(a, b) for a, b in pairs]).mean())
        self.dispersion = float(torch.stack([metrics.dispersion(s, gmm) for s in self.sets]).mean())

    def sw_ratio(self, x: Tensor) -> float:
        """Mean SW of ``x`` to each true set, over the reference (about 1 for exact samples)."""
        sw = torch.stack([metrics.sliced_wasserstein(x.double(), s) for s in self.sets]).mean()
        return float(sw) / self.sw_ref
