"""Sample-quality metrics: two-sample distances, measures against a known Gaussian mixture, and
the digits classifier's label accuracy and Fréchet feature distance (not Inception FID)."""

from .digits import (
    DigitsClassifier,
    digits_classifier,
    digits_features,
    digits_frechet_distance,
    label_accuracy,
)
from .distances import energy_distance, mmd, sliced_wasserstein
from .frechet import frechet_distance, gaussian_frechet_distance
from .mixture import (
    Chi2Result,
    assign,
    component_log_prob,
    dispersion,
    mode_weight_tv,
    mode_weights,
    nll,
    occupancy_chi2,
)

__all__ = [
    "sliced_wasserstein",
    "mmd",
    "energy_distance",
    "component_log_prob",
    "assign",
    "dispersion",
    "mode_weights",
    "mode_weight_tv",
    "occupancy_chi2",
    "Chi2Result",
    "nll",
    "frechet_distance",
    "gaussian_frechet_distance",
    "DigitsClassifier",
    "digits_classifier",
    "digits_features",
    "label_accuracy",
    "digits_frechet_distance",
]
