r"""Samplers at equal cost: quality against the number of score evaluations (NFE); wall time in the CSV.

Every sampler runs the most steps whose evaluations, as it declares them
(:func:`scoresde.sampling.steps_for_nfe`: e.g. 2 per step for Heun and for predictor-corrector
with one corrector step, ``order`` per step for singlestep DPM-Solver, plus 1 for the final
denoising evaluation), do not exceed the budget, so no sampler is given more evaluations than
another; a sampler whose single step already costs more than a budget (torchsde's ``srk``: 11)
is left out at that budget. The NFE reported is the one actually made.

Quality on a 2-D Gaussian mixture is measured against exact samples: the sliced Wasserstein
distance, the total variation between mode occupancies and true weights, and the dispersion
inside modes (1 for exact samples). Every run is repeated over several sampling seeds (each
against its own exact reference draw) and reported as a mean with its standard error; the noise
floor is a band, the same numbers for several pairs of independent exact draws, because one
pair's value is itself noise. Running the same samplers with the *exact* score of the mixture
isolates the discretisation error; the gap between the model-score and exact-score rows is the
model error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .. import metrics
from .._files import atomic_write_bytes
from ..sampling import expected_nfe, get_sampler, sample, steps_for_nfe

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
        return {"sliced_w2": nan, "mode_tv": nan, "dispersion": nan, "dispersion_error": nan}
    row = {"sliced_w2": float(metrics.sliced_wasserstein(x.flatten(1), reference.flatten(1).to(x)))}
    if gmm is not None:
        row["mode_tv"] = float(metrics.mode_weight_tv(x, gmm))
        row["dispersion"] = float(metrics.dispersion(x, gmm))
        row["dispersion_error"] = abs(row["dispersion"] - 1.0)  # 0 for exact samples (up to noise)
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
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """One row per (score, sampler, NFE budget, seed): the quality numbers and the wall time.

    ``seeds`` (default ``[seed]``) repeats every run with another sampling seed, so that
    :func:`summarise` can give each number its standard error; ``reference`` is then either one
    tensor for all seeds or a sequence of them, one per seed (independent reference draws make
    the spread across seeds include the reference's own noise)."""
    seeds = [seed] if seeds is None else list(seeds)
    refs = list(reference) if isinstance(reference, (list, tuple)) else [reference] * len(seeds)
    if len(refs) != len(seeds):
        raise ValueError(f"reference must be one tensor or one per seed ({len(seeds)}), got {len(refs)}")
    jobs = [(label, s, n, k) for label in score_fns for s in samplers for n in nfes for k in range(len(seeds))]
    rows = []
    for label, smp, budget, k in tqdm(jobs, desc="compare samplers", disable=not progress, dynamic_ncols=True):
        steps = steps_within(smp, sde, budget)
        if steps is None:  # one step is over the budget: no row rather than an unfair one
            continue
        start = time.perf_counter()
        res = sample(score_fns[label], sde, tuple(shape), sampler=smp, steps=steps, seed=seeds[k], device=device,
                     **SAMPLER_OPTIONS.get(smp, {}))
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append({"score": label, "sampler": smp, "nfe_budget": budget, "steps": steps, "nfe": int(res.nfe),
                     "seed": seeds[k], "seconds": seconds, **quality(res.x.detach().cpu(), refs[k], gmm)})
    return rows


def noise_floor(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Sliced W2 between two independent exact draws: what "perfect" looks like at this n."""
    return float(metrics.sliced_wasserstein(other.flatten(1).to(torch.float64), reference.flatten(1).to(torch.float64)))


def noise_floor_band(gmm, n: int, pairs: int = 8, seed: int = 0) -> dict[str, list[float]]:
    """Each quality number of exact samples, over ``pairs`` pairs of independent exact draws of
    ``n``: sliced W2 between the two draws of a pair, mode TV and dispersion error of each draw.
    One draw's floor is itself noisy (at n = 2000 it spans about 0.13-0.29 over 10 pairs); the
    band is what a perfect sampler's numbers would scatter over."""
    band: dict[str, list[float]] = {"sliced_w2": [], "mode_tv": [], "dispersion_error": []}
    for k in range(pairs):
        a, b = (gmm.sample(n, generator=torch.Generator().manual_seed(seed + 1000 * k + j)).to(torch.float64)
                for j in (0, 1))
        band["sliced_w2"].append(noise_floor(a, b))
        for x in (a, b):
            q = quality(x, b if x is a else a, gmm)
            band["mode_tv"].append(q["mode_tv"])
            band["dispersion_error"].append(q["dispersion_error"])
    return band


METRICS = ("sliced_w2", "dispersion_error", "mode_tv")


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Rows over seeds -> one row per (score, sampler, NFE budget): for each quality number its
    mean over the seeds and its standard error (``METRIC_se``; NaN from a single seed)."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["score"], r["sampler"], r.get("nfe_budget", r["nfe"])), []).append(r)
    out = []
    for (score, smp, budget), items in groups.items():
        row = {"score": score, "sampler": smp, "nfe_budget": budget, "seeds": len(items),
               "nfe": max(int(r["nfe"]) for r in items), "seconds": sum(r["seconds"] for r in items) / len(items)}
        for m in [m for m in METRICS if all(m in r for r in items)]:
            v = torch.tensor([float(r[m]) for r in items], dtype=torch.float64)
            row[m] = float(v.mean())
            row[f"{m}_se"] = float(v.std() / len(v) ** 0.5) if len(v) > 1 else float("nan")
        out.append(row)
    return out


def better(a: Mapping, b: Mapping, metric: str = "sliced_w2", z: float = 2.0) -> bool:
    """Whether summarised row ``a`` beats ``b`` on ``metric`` (lower is better) beyond the noise:
    a's mean plus ``z`` standard errors below b's mean minus ``z`` of its own. Never from one
    seed (no standard error), so no ranking is claimed that one more seed could reverse."""
    ma, sa, mb, sb = a[metric], a[f"{metric}_se"], b[metric], b[f"{metric}_se"]
    if any(v != v for v in (ma, sa, mb, sb)):  # NaN
        return False
    return ma + z * sa < mb - z * sb


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


LABELS = {"sliced_w2": "sliced W2 to exact samples", "dispersion_error": "|dispersion - 1| (in-mode spread)",
          "mode_tv": "mode-weight TV"}


def plot_comparison(rows: Sequence[Mapping], path, *, floor=None, title: str | None = None, max_curves: int = 5):
    """Quality against NFE: one row of panels per score (model, exact), one column per quality
    number (sliced W2, and on a mixture the dispersion error and mode-weight TV). Each curve is a
    sampler's mean over the seeds with a band of +-2 standard errors; ``floor`` is the noise
    floor, a number (a line on sliced W2) or :func:`noise_floor_band`'s values (grey bands from
    their least to their largest). At most ``max_curves`` samplers per panel (those with the
    lowest mean sliced W2 over the budgets); the legend sits outside the panels. Written
    atomically to ``path``; the figure is returned."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    from ..viz import save_figure

    summ = summarise(rows)
    for r in summ:  # rows given without a budget plot at their NFE
        r.setdefault("nfe_budget", r["nfe"])
    scores = list(dict.fromkeys(r["score"] for r in summ))
    mets = [m for m in METRICS if all(m in r for r in summ)]
    rank: dict[str, list[float]] = {}
    for r in summ:
        rank.setdefault(r["sampler"], []).append(r["sliced_w2"])
    samplers = sorted(rank, key=lambda k: sum(rank[k]) / len(rank[k]))[:max_curves]
    samplers = [k for k in dict.fromkeys(r["sampler"] for r in summ) if k in samplers]  # the caller's order
    colours = {k: f"C{i % 10}" for i, k in enumerate(samplers)}
    budgets = sorted({float(r["nfe_budget"]) for r in summ})
    fig = Figure(figsize=(3.4 * len(mets) + 1.9, 2.7 * len(scores) + 0.5))
    axes = fig.subplots(len(scores), len(mets), squeeze=False, sharex=True, sharey="col")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for i, score in enumerate(scores):
        for j, m in enumerate(mets):
            ax = axes[i][j]
            if isinstance(floor, Mapping) and floor.get(m):
                lo, hi = min(floor[m]), max(floor[m])
                ax.axhspan(max(lo, 1e-4), hi, color="0.6", alpha=0.3, lw=0,
                           label=f"exact vs exact ({len(floor['sliced_w2'])} pairs)")
            elif floor is not None and not isinstance(floor, Mapping) and m == "sliced_w2":
                ax.axhline(floor, color="0.4", lw=0.8, ls=":", label="exact vs exact (one pair)")
            for k in samplers:
                pts = sorted((float(r["nfe_budget"]), r[m], r.get(f"{m}_se", float("nan")))
                             for r in summ if r["score"] == score and r["sampler"] == k)
                if not pts:
                    continue
                x, y, se = (list(v) for v in zip(*pts, strict=True))
                y = [max(v, 1e-4) for v in y]  # an exact zero has no place on a log axis
                ax.plot(x, y, marker="o", ms=3, lw=1.3, color=colours[k], label=k)
                if all(e == e for e in se):
                    ax.fill_between(x, [max(a - 2 * e, a / 4) for a, e in zip(y, se, strict=True)],
                                    [a + 2 * e for a, e in zip(y, se, strict=True)], color=colours[k], alpha=0.13, lw=0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator(budgets))  # ticks at the budgets, labelled as numbers
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3, which="major")
            ax.tick_params(labelsize=7)
            ax.set_title(f"{score} score: {LABELS[m]}", fontsize=8)
            if i == len(scores) - 1:
                ax.set_xlabel("NFE budget (score evaluations, at most)", fontsize=8)
    for j in range(len(mets)):  # the same tick rule on every panel: 1-2-5 within 2 decades, else powers of 10
        lo, hi = axes[0][j].get_ylim()
        axes[0][j].yaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if hi / lo < 150 else (1,)))
    handles, labels = axes[0][0].get_legend_handles_labels()
    nseeds = max(r["seeds"] for r in summ)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False,
               title=f"mean of {nseeds} seeds" + (", band +-2 s.e." if nseeds > 1 else ""), title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
