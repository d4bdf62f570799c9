"""Exact ground truth: Gaussian mixtures whose p_t and score are closed-form under any linear SDE."""

from .gmm import GaussianMixture
from .presets import random_mixture, ring_mixture

__all__ = ["GaussianMixture", "ring_mixture", "random_mixture"]
