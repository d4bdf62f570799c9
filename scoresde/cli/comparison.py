r"""Samplers at equal cost: quality and wall time against the number of score evaluations (NFE).

Every sampler runs the most steps whose evaluations, as it declares them
(:func:`scoresde.sampling.steps_for_nfe`: e.g. 2 per step for Heun and for predictor-corrector
with one corrector step, ``order`` per step for singlestep DPM-Solver, plus 1 for the final
denoising evaluation), do not exceed the budget, so no sampler is given more evaluations than
another; a sampler whose single step already costs more than a budget (torchsde's ``srk``: 11)
is left out at that budget. The NFE reported is the one actually made.

Quality on a 2-D Gaussian mixture is measured against exact samples: the sliced Wasserstein
distance (with the distance between two independent exact draws as its noise floor), the total
variation between mode occupancies and true weights, and the dispersion inside modes (1 for
exact samples). Running the same samplers with the *exact* score of the mixture isolates the
discretisation error; the gap between the model-score and exact-score rows is the model error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .. import metrics
from ..sampling import expected_nfe, get_sampler, sample, steps_for_nfe
from ..training.files import atomic_write_bytes

# the fixed-step solver used for "ode" at a given NFE budget (the adaptive one cannot be budgeted)
SAMPLER_OPTIONS = {"ode": {"method": "midpoint"}}


def steps_within(sampler: str, sde, budget: int) -> int | None:
    """The most steps of ``sampler`` (with its :data:`SAMPLER_OPTIONS`) within ``budget``
    evaluations, or None when one step already costs more."""
    smp = get_sampler(sampler, **SAMPLER_OPTIONS.get(sampler, {}))
    steps = steps_for_nfe(smp, sde, budget)
    return steps if expected_nfe(smp, sde, steps) <= budget else None


def quality(x: torch.Tensor, reference: torch.Tensor, gmm=None) -> dict[str, float]:
    """Sample-quality numbers of ``x`` against exact ``reference`` samples (and the mixture)."""
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        nan = float("nan")
        return {"sliced_w2": nan, "mode_tv": nan, "dispersion": nan}
    row = {"sliced_w2": float(metrics.sliced_wasserstein(x.flatten(1), reference.flatten(1).to(x)))}
    if gmm is not None:
        row["mode_tv"] = float(metrics.mode_weight_tv(x, gmm))
        row["dispersion"] = float(metrics.dispersion(x, gmm))
    return row


def run_comparison(
    score_fns: Mapping[str, Callable],
    sde,
    shape: Sequence[int],
    samplers: Sequence[str],
    nfes: Sequence[int],
    reference: torch.Tensor,
    *,
    gmm=None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """One row per (score, sampler, NFE budget): the quality numbers and the wall time."""
    jobs = [(label, s, n) for label in score_fns for s in samplers for n in nfes]
    rows = []
    for label, smp, budget in tqdm(jobs, desc="compare samplers", disable=not progress, dynamic_ncols=True):
        steps = steps_within(smp, sde, budget)
        if steps is None:  # one step is over the budget: no row rather than an unfair one
            continue
        start = time.perf_counter()
        res = sample(score_fns[label], sde, tuple(shape), sampler=smp, steps=steps, seed=seed, device=device,
                     **SAMPLER_OPTIONS.get(smp, {}))
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append({"score": label, "sampler": smp, "nfe_budget": budget, "steps": steps, "nfe": int(res.nfe),
                     "seconds": seconds, **quality(res.x.detach().cpu(), reference, gmm)})
    return rows


def noise_floor(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Sliced W2 between two independent exact draws: what "perfect" looks like at this n."""
    return float(metrics.sliced_wasserstein(other.flatten(1).to(torch.float64), reference.flatten(1).to(torch.float64)))


def write_csv(rows: Sequence[Mapping], path) -> None:
    """The rows as a CSV file, written atomically."""
    import csv
    import io

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def plot_comparison(rows: Sequence[Mapping], path, *, floor: float | None = None, title: str | None = None):
    """Quality (sliced W2) and wall time against NFE, one line per score x sampler (written
    atomically to ``path``; the figure is returned)."""
    from ..viz import comparison_curves

    labelled = [{**r, "curve": f"{r['sampler']} ({r['score']} score)" if len({q['score'] for q in rows}) > 1
                 else r["sampler"]} for r in rows]
    fig = comparison_curves(labelled, metrics=["sliced_w2", "seconds"], x="nfe", group="curve")
    colours = {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(r["sampler"] for r in rows))}
    for ax in fig.axes:
        if ax.get_legend():
            ax.get_legend().remove()
        for line in ax.get_lines():  # one colour per sampler; dashed: the exact score
            label = line.get_label()
            line.set_color(colours.get(label.split(" (")[0], line.get_color()))
            if label.endswith("(exact score)"):
                line.set_linestyle("--")
    if floor is not None:
        fig.axes[0].axhline(floor, color="0.4", lw=0.8, ls=":", label="exact vs exact (noise floor)")
    fig.axes[0].set_ylabel("sliced W2 to exact samples")
    fig.axes[1].set_ylabel("wall time (s)")
    fig.axes[0].legend(fontsize=6, ncol=1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from ..viz import save_figure

    save_figure(fig, path)
    return fig
