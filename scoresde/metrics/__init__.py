"""Sample-quality metrics: two-sample distances and measures against a known Gaussian mixture."""

from .distances import energy_distance, mmd, sliced_wasserstein
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
]
