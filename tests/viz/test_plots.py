"""Plots draw the data they are given and write readable PNG files."""

import numpy as np
import pytest
import torch

import scoresde as ss
from scoresde import viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_scatter_panels_draw_the_points_and_density(tmp_path):
    gmm = ss.analytic.ring_mixture()
    a = gmm.sample(300, generator=torch.Generator().manual_seed(0))
    b = a + 0.1
    out = tmp_path / "scatter.png"
    fig = viz.scatter_panels({"data": a, "samples": b}, density=lambda x: gmm.log_prob(x, 0.0, ss.VPSDE()),
                             path=out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [ax.get_title() for ax in fig.axes] == ["data", "samples"]
    offsets = fig.axes[1].collections[-1].get_offsets()
    np.testing.assert_allclose(np.asarray(offsets), b.numpy())
    assert len(fig.axes[0].collections) > 1  # contours under the points


def test_image_grid_places_each_image(tmp_path):
    imgs = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0, 0.5)])
    out = tmp_path / "grid.png"
    fig = viz.image_grid(imgs, nrow=2, path=out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    canvas = fig.axes[0].get_images()[0].get_array()
    assert canvas.shape == (2 * 3 + 1, 2 * 4 + 1)
    # image k sits at row k // 2, column k % 2, rescaled from [-1, 1] to [0, 1]
    np.testing.assert_allclose(canvas[1:3, 1:4], 0.0)
    np.testing.assert_allclose(canvas[1:3, 5:8], 0.5)
    np.testing.assert_allclose(canvas[4:6, 1:4], 1.0)
    np.testing.assert_allclose(canvas[4:6, 5:8], 0.75)


def test_trajectories_and_curves(tmp_path):
    times = torch.linspace(1, 0, 5)
    states = torch.randn(5, 10, 2)
    fig = viz.trajectory_panels({"ode": (times, states)}, path=tmp_path / "traj.png")
    assert len(fig.axes[0].lines) == 10
    np.testing.assert_allclose(fig.axes[0].lines[3].get_xdata(), states[:, 3, 0].numpy())
    rows = [{"sampler": s, "nfe": n, "swd": 1.0 / n, "seconds": n * 1e-3}
            for s in ("em", "ode") for n in (10, 100, 1000)]
    fig = viz.comparison_curves(rows, metrics=["swd", "seconds"], path=tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG_MAGIC
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [10, 100, 1000])
    np.testing.assert_allclose(line.get_ydata(), [0.1, 0.01, 0.001])


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="panel 'x' must hold"):
        viz.scatter_panels({"x": torch.zeros(5, 3)})
    with pytest.raises(ValueError, match="images must have shape"):
        viz.image_grid(torch.zeros(2, 4, 4))
