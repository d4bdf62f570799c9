"""GaussianMixture.class_score_fn: the exact class-conditional score with the components as classes."""

from __future__ import annotations

import pytest
import torch

import scoresde as ss


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VESDE(), ss.SubVPSDE()], ids=["vp", "ve", "subvp"])
def test_class_scores_are_the_components_and_average_to_the_mixture_score(sde):
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, generator=gen, dtype=torch.float64) * 2
    stds = 0.3 + torch.rand(3, 4, generator=gen, dtype=torch.float64)  # diagonal components
    gmm = ss.analytic.GaussianMixture(means, stds, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    fn = gmm.class_score_fn(sde)
    assert fn.num_classes == 3
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(30, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    y = torch.arange(30) % 3
    got = fn(x, t, y)
    for k in range(3):  # the score of component k alone, by the mixture code with one component
        one = ss.analytic.GaussianMixture(means[k:k + 1], stds[k:k + 1], torch.ones(1, dtype=torch.float64))
        rows = y == k
        torch.testing.assert_close(got[rows], one.score(x[rows], t[rows], sde), rtol=1e-12, atol=1e-12)
    # Bayes: the mixture score is the posterior-weighted average of the class scores
    post = gmm.component_posterior(x, t, sde)
    avg = sum(post[:, k:k + 1] * fn(x, t, torch.full((30,), k)) for k in range(3))
    torch.testing.assert_close(avg, fn(x, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fn(x, t), gmm.score(x, t, sde), rtol=0, atol=0)
    with pytest.raises(ss.ArgumentError, match="y"):
        fn(x, t, torch.full((30,), 3))
