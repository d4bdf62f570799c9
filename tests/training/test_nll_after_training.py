"""Held-out PF-ODE NLL of trained MLPs on the 2-D ring mixture against its exact density.

Numbers measured on this recipe (300 held-out points, exact trace, the exact p_T as prior)
are in benchmarks/RESULTS.md.
"""

import math

import pytest
import torch

import scoresde as ss

pytestmark = pytest.mark.slow


def heldout_gap(model, sde, gmm, n=300):
    test = ss.MixtureDataset(gmm, n, seed=999, dtype=torch.float64)
    ll = ss.log_likelihood(lambda x, t: model(x, t), sde, test.data, trace="exact",
                           prior_log_prob=gmm.prior_log_prob(sde))
    gap = -ll.log_p - (-test.log_prob(test.data))  # model NLL - true NLL, per point
    return float(gap.mean()), float(gap.std()) / math.sqrt(n)


def test_likelihood_weighted_mlp_nll_within_0p1_nats_of_truth(ring_models):
    gap, se = heldout_gap(*ring_models("likelihood"))
    assert abs(gap) < 0.10, f"NLL gap {gap:+.4f} (se {se:.4f})"


def test_sigma2_weighted_mlp_nll_within_0p1_nats_of_truth(ring_models):
    gap, se = heldout_gap(*ring_models("sigma2"))
    assert abs(gap) < 0.10, f"NLL gap {gap:+.4f} (se {se:.4f})"
