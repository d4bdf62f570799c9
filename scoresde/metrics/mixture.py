r"""Density-aware quality measures of samples against a known :class:`~scoresde.analytic.GaussianMixture`.

Sliced Wasserstein is too noisy to tell good samplers apart, and the mean log-density rewards
samples bunched at the modes. These measures look at what goes wrong in practice:

* :func:`dispersion` -- the spread around the modes: mean over samples of
  :math:`\frac1D\lVert (x - \mu_{k^*})/s_{k^*}\rVert^2`, with :math:`k^*` the most likely component
  of :math:`x`. True samples give about 1; over-smoothed (too wide) samples more, samples
  collapsed onto the modes less.
* :func:`mode_weights`, :func:`mode_weight_tv` -- the fraction of samples per component and its
  total-variation distance :math:`\tfrac12\sum_k |\hat w_k - w_k|` to the true weights (dropped or
  evened-out modes).
* :func:`occupancy_chi2` -- Pearson's chi-square test of the component counts against the weights.
* :func:`nll` -- exact mean :math:`-\log p_0(x)` under the clean mixture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..analytic import GaussianMixture
from ..errors import ArgumentError
from .distances import check_finite_samples


def _check(x: Tensor, gmm: GaussianMixture) -> Tensor:
    if not isinstance(gmm, GaussianMixture):
        raise ArgumentError(f"gmm must be a scoresde.analytic.GaussianMixture, got {type(gmm).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2 or x.shape[1] != gmm.dim:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ArgumentError(f"x must be a floating-point tensor of shape (n, {gmm.dim}), got {got}")
    return check_finite_samples("x", x)


def component_log_prob(x: Tensor, gmm: GaussianMixture) -> Tensor:
    r""":math:`\log w_k + \log\mathcal N(x;\mu_k, \mathrm{diag}(s_k^2))` of the clean mixture, shape ``(n, K)``."""
    x = _check(x, gmm)
    mu, s, w = (p.to(device=x.device, dtype=x.dtype) for p in (gmm.means, gmm.stds, gmm.weights))
    z = (x[:, None, :] - mu) / s
    return w.log() - 0.5 * (z.square() + 2 * s.log() + math.log(2 * math.pi)).sum(-1)


def assign(x: Tensor, gmm: GaussianMixture) -> Tensor:
    """The most likely component of each sample, shape ``(n,)``."""
    return component_log_prob(x, gmm).argmax(-1)


def dispersion(x: Tensor, gmm: GaussianMixture) -> Tensor:
    """Mean squared standardised distance to the most likely component, per dimension (about 1 for true samples)."""
    k = assign(x, gmm)
    mu, s = (p.to(device=x.device, dtype=x.dtype) for p in (gmm.means, gmm.stds))
    return ((x - mu[k]) / s[k]).square().mean()


def mode_weights(x: Tensor, gmm: GaussianMixture) -> Tensor:
    """Fraction of samples assigned to each component, shape ``(K,)``."""
    k = assign(x, gmm)
    return torch.bincount(k, minlength=gmm.n_components).to(x.dtype) / len(x)


def mode_weight_tv(x: Tensor, gmm: GaussianMixture) -> Tensor:
    r"""Total variation :math:`\tfrac12\sum_k|\hat w_k - w_k|` between occupancy and true weights."""
    w = gmm.weights.to(device=x.device, dtype=x.dtype)
    return 0.5 * (mode_weights(x, gmm) - w).abs().sum()


@dataclass
class Chi2Result:
    statistic: float
    p_value: float
    dof: int


def occupancy_chi2(x: Tensor, gmm: GaussianMixture, *, expected_weights: Tensor | None = None) -> Chi2Result:
    r"""Pearson chi-square test of the component counts against the weights.

    Components expected to hold fewer than 5 samples are pooled into one cell (with the next
    smallest ones until it expects at least 5), as the test's approximation requires; the degrees
    of freedom are the number of cells minus one. The occupancy of exact samples follows the
    weights up to the (small) overlap between components; pass ``expected_weights`` (e.g.
    :func:`mode_weights` of many true samples) to test against true samples' occupancy instead.
    """
    from scipy import stats  # imported here: scoresde's import stays light

    n = len(_check(x, gmm))
    counts = torch.bincount(assign(x, gmm), minlength=gmm.n_components).double().cpu()
    if expected_weights is not None:
        ok = isinstance(expected_weights, Tensor) and expected_weights.shape == (gmm.n_components,)
        if not ok or not bool((expected_weights.double() >= 0).all()) or not float(expected_weights.sum()) > 0:
            raise ArgumentError(
                f"expected_weights must be a tensor of {gmm.n_components} non-negative weights with a positive sum, "
                f"got {expected_weights!r:.80}"
            )
    w = (gmm.weights if expected_weights is None else expected_weights).double().cpu()
    expected = n * w / w.sum()
    order = torch.argsort(expected)
    counts, expected = counts[order], expected[order]
    if expected[0] < 5:  # pool the smallest cells until the pooled one expects >= 5
        k = int((expected.cumsum(0) < 5).sum()) + 1
        counts = torch.cat([counts[:k].sum(0, keepdim=True), counts[k:]])
        expected = torch.cat([expected[:k].sum(0, keepdim=True), expected[k:]])
    if len(expected) < 2:
        raise ArgumentError(f"too few samples for a chi-square test: {n} samples over {gmm.n_components} components")
    stat = float(((counts - expected).square() / expected).sum())
    dof = len(expected) - 1
    return Chi2Result(stat, float(stats.chi2.sf(stat, dof)), dof)


def nll(x: Tensor, gmm: GaussianMixture) -> Tensor:
    r"""Exact mean negative log-density :math:`-\frac1n\sum_i \log p_0(x_i)` of the clean mixture (nats)."""
    return -torch.logsumexp(component_log_prob(x, gmm), -1).mean()
