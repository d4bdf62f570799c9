"""Trained ring-mixture score models shared by the accuracy and likelihood tests (trained once)."""

import pytest
import torch

import scoresde as ss

RECIPE = dict(steps=4000, batch_size=512, lr=2e-3, warmup_steps=200, lr_schedule="cosine", min_lr_ratio=0.05,
              ema_decay=0.999, seed=0, progress=False)


def train_ring_mlp(weighting: str):
    """The recipe for the 2-D 8-component ring mixture under VP: MLP(2, 128, 3), eps
    parameterisation with data_std=4, 4000 AdamW steps of 512 (cosine decay), EMA 0.999 --
    about a minute of one CPU core."""
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture()
    data = ss.MixtureDataset(gmm, 20_000, seed=1)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 128, 3), sde, data_std=4.0)
    trainer = ss.Trainer(model, ss.DSMLoss(sde, weighting), data, None, **RECIPE)
    trainer.fit()
    return trainer.ema.model.double(), sde, gmm


_CACHE = {}


@pytest.fixture(scope="session")
def ring_models():
    """``ring_models(weighting)`` -> (EMA model in float64, sde, gmm), trained on first use."""

    def get(weighting):
        if weighting not in _CACHE:
            _CACHE[weighting] = train_ring_mlp(weighting)
        return _CACHE[weighting]

    return get
