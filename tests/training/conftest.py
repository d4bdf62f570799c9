"""Trained ring-mixture score models shared by the trained-model tests (trained once per session)."""

import pytest
from ring_recipe import train_ring_mlp

_CACHE = {}


@pytest.fixture(scope="session")
def ring_models():
    """``ring_models(weighting)`` -> (EMA model in float64, sde, gmm), trained on first use."""

    def get(weighting):
        if weighting not in _CACHE:
            _CACHE[weighting] = train_ring_mlp(weighting)
        return _CACHE[weighting]

    return get
