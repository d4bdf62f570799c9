"""Headless matplotlib plots: sample scatters, image grids, trajectories, comparison curves.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, no
display needed), writes it when ``path`` is given, and returns the figure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._files import atomic_write
from ..errors import ArgumentError, check_int


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write ``fig`` atomically (an exclusive temporary file in the same folder, then rename;
    see :func:`scoresde._files.atomic_write`); the format follows the suffix (png default)."""
    FigureCanvasAgg(fig)
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with atomic_write(path) as f:
        fig.savefig(f, dpi=dpi, bbox_inches="tight", format=ext)


def _check_mapping(name: str, value, what: str) -> None:
    if not isinstance(value, Mapping) or not value:
        raise ArgumentError(f"{name} must be a non-empty mapping {what}, got {type(value).__name__}")


def _new_figure(ncols: int, size: float = 3.6, height: float | None = None) -> tuple[Figure, list]:
    fig = Figure(figsize=(size * ncols, height or size))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def scatter_panels(
    panels: Mapping[str, torch.Tensor | np.ndarray],
    *,
    limits: tuple[float, float] | None = None,
    density=None,
    path: str | os.PathLike | None = None,
    max_points: int = 4000,
) -> Figure:
    """One scatter panel per entry of ``panels`` (name -> (n, 2) points), side by side.

    ``density``, a function ``(m, 2) tensor -> (m,) log-density``, is drawn as contours under
    every panel (e.g. the exact mixture's log p_0).
    """
    _check_mapping("panels", panels, "name -> (n, 2) points")
    arrays = {name: _numpy(x)[:max_points] for name, x in panels.items()}
    for name, a in arrays.items():
        if a.ndim != 2 or a.shape[1] != 2:
            raise ArgumentError(f"panel {name!r} must hold (n, 2) points, got shape {a.shape}")
    if limits is None:
        everything = np.concatenate(list(arrays.values()))
        lo, hi = np.percentile(everything, [0.5, 99.5])
        pad = 0.1 * (hi - lo)
        limits = (lo - pad, hi + pad)
    fig, axes = _new_figure(len(arrays))
    grid = None
    if density is not None:
        u = np.linspace(*limits, 200)
        gx, gy = np.meshgrid(u, u)
        pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))
        grid = (gx, gy, _numpy(density(pts)).reshape(gx.shape))
    for ax, (name, a) in zip(axes, arrays.items(), strict=True):
        if grid is not None:
            ax.contour(grid[0], grid[1], np.maximum(grid[2], grid[2].max() - 12), levels=6,
                       colors="0.75", linewidths=0.6, negative_linestyles="solid")
        ax.scatter(a[:, 0], a[:, 1], s=3, alpha=0.4, lw=0, color="C0", rasterized=True)  # light: density shows
        ax.set_title(name, fontsize=10)
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    if path is not None:
        save_figure(fig, path)
    return fig


def image_grid(
    images: torch.Tensor | np.ndarray,
    *,
    nrow: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """A grid of images of shape ``(n, C, H, W)`` (C = 1 or 3) with values in ``value_range``."""
    imgs = _numpy(images)
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3):
        raise ArgumentError(f"images must have shape (n, 1 or 3, H, W), got {imgs.shape}")
    n, c, h, w = imgs.shape
    nrow = int(np.ceil(np.sqrt(n))) if nrow is None else check_int("nrow", nrow)
    ncol = int(np.ceil(n / nrow))
    lo, hi = value_range
    imgs = np.clip((imgs - lo) / (hi - lo), 0, 1)
    canvas = np.ones((ncol * (h + 1) + 1, nrow * (w + 1) + 1, c))
    for k in range(n):
        r, q = divmod(k, nrow)
        canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = (
            imgs[k].transpose(1, 2, 0)
        )
    fig = Figure(figsize=(0.45 * nrow + 0.5, 0.45 * ncol + 0.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas.squeeze(-1) if c == 1 else canvas, cmap="gray" if c == 1 else None,
              interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig


def trajectory_panels(
    trajectories: Mapping[str, tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]],
    *,
    n_paths: int = 40,
    path: str | os.PathLike | None = None,
) -> Figure:
    """2-D paths of a few samples: ``{name: (times (S,), states (S, n, 2))}``, start to end."""
    _check_mapping("trajectories", trajectories, "name -> (times, states)")
    fig, axes = _new_figure(len(trajectories))
    ends = [_numpy(st)[[0, -1], :n_paths] for _, st in trajectories.values()]
    lim = max(float(np.abs(e).max()) for e in ends) * 1.08  # one square frame for all panels: comparable
    for ax, (name, (times, states)) in zip(axes, trajectories.items(), strict=True):
        xs = _numpy(states)
        if xs.ndim != 3 or xs.shape[2] != 2:
            raise ArgumentError(f"trajectory {name!r} must have shape (steps, n, 2), got {xs.shape}")
        xs = xs[:, :n_paths]
        for i in range(xs.shape[1]):
            ax.plot(xs[:, i, 0], xs[:, i, 1], lw=0.5, alpha=0.45, color="C0")
        ax.scatter(xs[0, :, 0], xs[0, :, 1], s=6, color="0.5", label="start", zorder=3)
        ax.scatter(xs[-1, :, 0], xs[-1, :, 1], s=6, color="C3", label="end", zorder=3)
        t = _numpy(times)
        ax.set_title(f"{name}: t = {t[0]:.3g} to {t[-1]:.3g}", fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend, below the panels, off the data
    fig.legend(handles, ["start (t = T, the prior)", "end (t = eps, a sample)"], loc="lower center", ncol=2,
               fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.02))
    if path is not None:
        save_figure(fig, path)
    return fig


def comparison_curves(
    rows: Sequence[Mapping],
    *,
    metrics: Sequence[str],
    x: str = "nfe",
    group: str = "sampler",
    log_y: Sequence[bool] | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One panel per metric: each group's metric against ``x`` (e.g. quality vs NFE), log-log."""
    if not rows:
        raise ArgumentError("rows must hold at least one row to plot, got none")
    for key in (x, group, *metrics):
        if any(key not in row for row in rows):
            raise ArgumentError(f"every row must have the key {key!r} (x, group and metrics name row keys)")
    groups: dict[str, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(str(row[group]), []).append(row)
    fig, axes = _new_figure(len(metrics), size=4.0, height=3.4)
    log_y = log_y or [True] * len(metrics)
    for ax, metric, logy in zip(axes, metrics, log_y, strict=True):
        for k, (name, items) in enumerate(groups.items()):
            items = sorted(items, key=lambda r: float(r[x]))
            ax.plot([float(r[x]) for r in items], [float(r[metric]) for r in items],
                    marker="o", ms=3, lw=1.2, color=f"C{k % 10}", label=name)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
