"""Matplotlib plots (headless-safe): samples, image grids, trajectories, comparison curves."""

from .plots import comparison_curves, image_grid, save_figure, scatter_panels, trajectory_panels

__all__ = ["scatter_panels", "image_grid", "trajectory_panels", "comparison_curves", "save_figure"]
