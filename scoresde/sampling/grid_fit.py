r"""Time grids fitted to the model: :func:`optimize_grid`, and :func:`save_grid` / :func:`load_grid`.

A few-step sampler's error depends on *where* its few steps go far more than a fixed rule
(uniform in log-SNR, EDM's :math:`\rho = 7`) can know, because the curvature of the model's own
probability-flow trajectories decides it. :func:`optimize_grid` measures that curvature on a small
calibration batch and picks the grid by dynamic programming, then a local search on the global
error, after GITS (Chen et al. 2024,
"On the Trajectory Regularity of ODE-based Diffusion Sampling", ICML 2024).

**Why GITS and not Align Your Steps.** AYS (Sabour et al. 2024) minimises a Monte-Carlo estimate
of an upper bound on the KL divergence between the discretised and the true *stochastic* process
by iterative, noisy gradient steps on the times; the bound is loose for deterministic
(probability-flow) solvers, the optimisation needs many model evaluations per iteration, and its
result depends on the optimiser's noise. GITS compares the sampler's own steps with the model's
own accurate ODE trajectories, so what it minimises is the error the sampler actually makes; the
search is exact (a DP finds the global optimum of its objective over the candidates), and it is
cheap, deterministic and needs no tuning.

**The method.**

1. A calibration batch :math:`x^{(b)}_{T} \sim p_T`, :math:`b = 1..B` (``calibration``, default
   128 samples, drawn with ``seed``).
2. Teacher: the probability-flow ODE :math:`dx/dt = f(t)x - \tfrac12 g(t)^2 s_\theta(x,t)`
   solved accurately (the ``ode`` sampler, dopri5 at ``rtol = atol = 1e-6``) through ``candidates``
   times :math:`c_0 = t_{start} > c_1 > \dots > c_{K-1} = \varepsilon` (default ``K = 120`` for
   multistep DPM-Solver, 60 for the others; uniform in log-SNR :math:`\lambda = \log(\alpha/\sigma)`
   on a linear SDE, in :math:`t` otherwise), recording the teacher states :math:`X_k`.
3. Local costs: :math:`C(i \to j)` is the error of ONE step of the chosen sampler from the
   teacher state :math:`X_i` at :math:`c_i` to :math:`c_j`, against :math:`X_j`:

   .. math:: C(i\to j) = \frac1B \sum_b w_j\,\big\| \Phi_{c_i\to c_j}(X_i^{(b)}) - X_j^{(b)} \big\|_2,
             \qquad w_j = \frac{\mathrm{sd}(X_{K-1})}{\mathrm{sd}(X_j)},

   where :math:`\mathrm{sd}(X_j)` is the root-mean-square spread of the teacher batch at
   :math:`c_j`. The weight carries an error made at :math:`c_j` to the end: for Gaussian data the
   flow map from :math:`c_j` to :math:`\varepsilon` is the scaling
   :math:`x \mapsto x\,\mathrm{sd}_\varepsilon/\mathrm{sd}_{c_j}`, so without it the costs in
   high-noise regions (VE: :math:`\sigma` up to 50) would dwarf those that decide the samples
   (``weighting="none"`` is GITS's unweighted distance).

   *Multistep DPM-Solver* (``dpm_solver``, ``method="multistep"``): a step of order 2 from
   :math:`c_i` to :math:`c_j` also uses the prediction at the previous grid point :math:`c_p`;
   its cost :math:`C(p, i\to j)` uses the teacher predictions :math:`m(X_p, c_p)`,
   :math:`m(X_i, c_i)`, so it is the exact local error of that step given an exact history, and
   costs no evaluations beyond the :math:`K` predictions on the teacher states (computed in closed
   form for every triple :math:`p < i < j`, batched over :math:`p` and :math:`j`). The order of
   each step follows the sampler's own rule (:meth:`~scoresde.sampling.DPMSolver.step_order`: its
   cap by the step's index, and with ``lower_order_final`` order 1 where
   :math:`h_{ij} > r\,h_{pi}`, ``r = MAX_STEP_RATIO``), inside the DP; order-3 steps are scored
   with their order-2 form (a triple history would make the DP quartic in :math:`K`).

   *Any other deterministic sampler*: one step of the sampler through :func:`~scoresde.sample`
   from :math:`X_i` on the grid :math:`(c_i, c_j)`, i.e. the form it takes with no history
   (order 1 for a multistep method such as ``unipc``, its full form for a single-step one such
   as ``heun`` or singlestep DPM-Solver): :math:`K(K-1)/2` one-step solves, the dominant cost.

4. Dynamic programming: the path :math:`0 = k_0 < k_1 < \dots < k_N = K-1` of exactly
   :math:`N` = ``steps`` steps minimising :math:`\sum_n C(k_n \to k_{n+1})` (with the multistep
   history :math:`k_{n-1}` in the cost, the DP runs over pairs :math:`(k_{n-1}, k_n)`:
   :math:`O(N K^3)` additions). This is GITS's objective: the sum of (propagated) local errors
   bounds the global error when the flow does not expand errors; it is exact on the local
   errors, not on how they interact.
5. Refinement (``refine=True``, default): coordinate descent on the *global* error, the mean L2
   distance between the sampler's end state (run from :math:`X_0` on the calibration batch, with
   its real history and orders) and the teacher's :math:`X_{K-1}`, moving one interior point at
   a time by 8, 4, 2, 1 candidates, from two starts (the DP's path and the default grid snapped to
   the candidates), at most 150 runs each. This is GITS's final check on the end distance made
   into a local search; it mattered: on the ring at 5 evaluations (VP, float64) the DP's grid
   alone left a dispersion error of 2.1, the refined one 0.8 (the default grid: 8.5).
6. Never worse than the default on the calibration batch: if the sampler's default grid has the
   smaller global error there, it is returned (``GridFit.chose_default``).

**Cost.** The teacher solve (about 170 evaluations of the batch on the mixtures), :math:`K`
predictions, the refinement runs (``steps`` evaluations of the batch each), and for a generic
sampler the :math:`K(K-1)/2` one-step solves. Reported as ``GridFit.evaluations`` (single-sample
score evaluations) and ``GridFit.relative_cost`` (over one 1000-sample run at the same budget,
final denoising step included). Measured (``benchmarks/results/grid_fit.csv``, 128 calibration
samples): ``dpm_solver`` about 20x a 1000-sample run at 5 evaluations, 38x at 10; ``unipc``
about 50-63x and ``heun`` 64-99x (the one-step solves). Paid once per model, sampler and
budget: save the grid (:func:`save_grid`) and reuse it (``scoresde sample --grid FILE``).

**Files.** :func:`save_grid` writes JSON (times as decimal floats that round-trip exactly, the
sampler and its options, steps, the SDE's class and constructor arguments, eps, and any metadata
given); :func:`load_grid` validates it and, given the SDE and sampler it is for, refuses a file
made for others. No pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import (
    SOLVER_DTYPES,
    ArgumentError,
    NonFiniteError,
    check_bool,
    check_choice,
    check_eps,
    check_int,
    check_range,
    check_seed,
    check_shape,
    check_tolerance,
)
from ..sde import SDE, LinearSDEBase
from .api import sample
from .base import Sampler
from .budget import expected_nfe
from .dpm_solver import DPMSolver
from .grids import check_user_grid, time_grid
from .registry import check_serves, make_sampler

__all__ = ["optimize_grid", "GridFit", "save_grid", "load_grid", "GridFile", "check_grid_for"]

GRID_FORMAT = "scoresde-grid"
GRID_VERSION = 1
WEIGHTINGS = ("propagated", "none")


@dataclass
class GridFit:
    """What :func:`optimize_grid` found (with ``return_info=True``).

    Attributes:
        times: the fitted grid, float64, decreasing, ``steps + 1`` points.
        cost: the DP objective of the fitted path (the sum of its weighted local errors, with the
            orders the sampler gives it), also when ``chose_default``.
        default_cost: the same objective for the sampler's default grid at ``steps`` (when the
            default grid lies on the candidates' range: same ends), for comparison.
        candidates: the candidate times.
        teacher_nfe: score evaluations of the teacher solve (each on the whole batch).
        evaluations: score evaluations of single samples in all (teacher, predictions, one-step
            solves), i.e. batch rows passed through ``score_fn``.
        relative_cost: ``evaluations`` over those of one 1000-sample run of the sampler at
            ``steps`` (final denoising step included).
        orders: the order of each step of the returned grid (multistep DPM-Solver), else None.
        chose_default: True when the sampler's default grid had the smaller global error on the
            calibration batch, and is what was returned.
    """

    times: Tensor
    cost: float
    default_cost: float | None
    candidates: Tensor
    teacher_nfe: int
    evaluations: int
    relative_cost: float | None
    orders: list[int] | None = None
    chose_default: bool = False


def optimize_grid(
    score_fn,
    sde: SDE,
    shape: Sequence[int],
    steps: int,
    sampler: str | Sampler = "dpm_solver",
    *,
    seed: int = 0,
    calibration: int = 128,
    candidates: int | None = None,
    eps: float | None = None,
    t_start: float | None = None,
    weighting: str = "propagated",
    refine: bool = True,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_info: bool = False,
    **sampler_options,
) -> Tensor | GridFit:
    r"""The grid of ``steps`` steps for ``sampler`` fitted to ``score_fn``'s own PF-ODE trajectories.

    Pass the result as ``ss.sample(score_fn, sde, shape, sampler=sampler, grid=times,
    **sampler_options)``. The method, its cost and why it was chosen: the module docstring.

    Args:
        score_fn: ``score_fn(x, t)`` as for :func:`~scoresde.sample`.
        sde: the forward SDE.
        shape: ``(batch, *event_shape)`` of the samples the grid is for; only the event shape is
            used (the calibration batch has ``calibration`` samples).
        steps: the number of steps of the grid (it has ``steps + 1`` times).
        sampler: a deterministic sampler with a fixed number of evaluations per step (a name or
            an instance; ``**sampler_options`` go to its constructor).
        seed: seed of the calibration draw: same seed, same grid.
        calibration: calibration samples ``B`` (default 128).
        candidates: candidate times ``K`` (default ``max(120, 2 steps + 1)``; memory and time grow
            like :math:`K^3` for multistep DPM-Solver, :math:`K^2` solves otherwise), uniform in log-SNR on a linear SDE (else
            in ``t``), from ``t_start`` to ``eps``; the grid is a subset of them.
        eps, t_start: the grid's end points (default: the sampler's end time for this SDE and
            ``sde.T``); the fitted grid starts and ends exactly there.
        weighting: ``"propagated"`` (default: a local error weighted by the factor that carries it
            to the end, see the module docstring) or ``"none"`` (GITS's plain distance).
        rtol, atol: tolerances of the teacher solve (dopri5).
        dtype, device: of the calibration run (default: the default dtype, the CPU).
        return_info: return a :class:`GridFit` (grid, objective, the default grid's objective,
            cost in evaluations) instead of the times alone.

    Returns:
        The times, a float64 CPU tensor of ``steps + 1`` strictly decreasing values from
        ``t_start`` to ``eps`` (or a :class:`GridFit`).

    Raises:
        ArgumentError: on a bad argument (named), a stochastic or adaptive sampler, an SDE the
            sampler cannot serve, or fewer candidates than ``steps + 1``.
    """
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise ArgumentError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    smp = make_sampler(sampler, sampler_options)
    check_serves(smp, sde)
    if smp.is_stochastic():
        raise ArgumentError(f"sampler {smp.name!r} draws noise; optimize_grid fits grids for deterministic samplers "
                            "(it compares their steps with the probability-flow ODE's trajectories)")
    if smp.evaluations(1, sde) is None:
        raise ArgumentError(f"sampler {smp.name!r} is adaptive (it chooses its own steps); a grid only sets its "
                            "output times, there is nothing to fit")
    shape = check_shape("shape", shape)
    steps = check_int("steps", steps)
    check_seed("seed", seed)
    calibration = check_int("calibration", calibration, 2)
    multistep = isinstance(smp, DPMSolver) and smp.method == "multistep"
    if candidates is None:  # the generic costs take K (K - 1) / 2 one-step solves: fewer candidates
        candidates = max(120 if multistep else 60, 2 * steps + 1)
    candidates = check_int("candidates", candidates, 2)
    if candidates < steps + 1:
        raise ArgumentError(f"candidates must be at least steps + 1 = {steps + 1} (the grid is chosen among them), "
                            f"got {candidates}")
    check_choice("weighting", weighting, WEIGHTINGS)
    check_bool("refine", refine)
    check_bool("return_info", return_info)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    dtype = dtype or torch.get_default_dtype()
    if dtype not in SOLVER_DTYPES:
        raise ArgumentError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    t_end = check_eps(smp.default_eps(sde) if eps is None else eps, sde.T)
    t0 = sde.T if t_start is None else check_range("t_start", t_start, t_end, sde.T, high_closed=True)
    linear = isinstance(sde, LinearSDEBase)
    kind = "log_snr" if linear else "uniform"
    cand = time_grid(sde, candidates - 1, t0, t_end, kind)
    K = len(cand)

    # (1)-(2) the teacher: an accurate PF-ODE solve through every candidate time
    event = shape[1:]
    teacher = sample(score_fn, sde, (calibration, *event), sampler="ode", rtol=rtol, atol=atol, grid=cand,
                     seed=seed, dtype=dtype, device=device, return_trajectory=True, denoise=False, check_every=0)
    X = teacher.trajectory.states  # (K, B, *event)
    evaluations = teacher.nfe * calibration
    spread = (X - X.mean(dim=1, keepdim=True)).flatten(2).square().mean(dim=(1, 2)).sqrt()  # (K,)
    w = (spread[-1] / spread) if weighting == "propagated" else torch.ones_like(spread)

    if multistep:
        costs = _MultistepCosts(smp, sde, score_fn, X, cand.to(X), w)
        evaluations += K * calibration
    else:
        costs = _OneStepCosts(smp, sde, score_fn, X, cand, w)
        evaluations += costs.evaluations
    cand_lams = sde.log_snr(cand) if linear else None

    def orders_of(path: list[int]) -> list[int] | None:
        return smp.step_orders(cand_lams[path]) if multistep else None

    def orders_of_times(t: Tensor) -> list[int]:
        return smp.step_orders(sde.log_snr(t))

    try:
        default = time_grid(sde, steps, t0, t_end, smp.default_grid)
    except ArgumentError:  # a grid defined through log-SNR on a nonlinear SDE
        default = None
    if multistep:
        # the order each step may have by its index alone (uniform steps), and the step-ratio rule
        caps = [smp.step_order(n, [1.0] * steps) for n in range(steps)]
        ratio = getattr(smp, "MAX_STEP_RATIO", None) if smp.lower_order_final else None
        path = _dp(costs, K, steps, caps, cand_lams, ratio)
    else:
        path = _dp(costs, K, steps, None)
    orders = orders_of(path)
    cost = costs.path_cost(path, orders)
    runs = 0
    if refine:
        # two starts: the DP's path and the default grid snapped to the candidates
        starts = [path]
        if default is not None:
            snapped = sorted({int(torch.argmin((cand - t).abs())) for t in default} | {0, K - 1})
            if len(snapped) == steps + 1 and snapped != path:
                starts.append(snapped)
        found = []
        for start in starts:
            p, r, e = _refine(smp, sde, score_fn, X, cand, start)
            runs += r
            found.append((e, p))
        path = min(found)[1]
        orders = orders_of(path)
        cost = costs.path_cost(path, orders)
    times = cand[path].clone()
    times[0], times[-1] = t0, t_end
    # never worse than the default grid on the calibration batch: keep the default if it wins there
    chose_default = False
    if default is not None:
        fitted_err, default_err = (_global_error(smp, sde, score_fn, X, g) for g in (times, default))
        runs += 2
        if default_err < fitted_err:
            times, chose_default = default.clone(), True
    evaluations += runs * smp.evaluations(steps, sde) * calibration
    if not bool((times[1:] < times[:-1]).all()):  # candidates are strictly decreasing; this cannot fail
        raise AssertionError(f"fitted grid not decreasing: {times.tolist()}")
    if not return_info:
        return times
    default_cost = None
    if default is not None:
        snapped = [int(torch.argmin((cand - t).abs())) for t in default]
        if len(set(snapped)) == len(snapped):
            default_cost = costs.path_cost(snapped, orders_of(snapped))
    n_run = expected_nfe(smp, sde, steps)
    rel = None if not n_run else evaluations / (1000 * n_run)
    return GridFit(times=times, cost=float(cost), default_cost=default_cost, candidates=cand, teacher_nfe=teacher.nfe,
                   evaluations=int(evaluations), relative_cost=rel, orders=orders_of_times(times) if multistep else None,
                   chose_default=chose_default)


# ---- local costs ---------------------------------------------------------------------------------
class _MultistepCosts:
    r"""Local costs of multistep DPM-Solver steps from teacher states with teacher predictions.

    ``c1[i, j]``: the order-1 step :math:`i \to j`; ``c2[p, i, j]``: the order-2 step with the
    previous point :math:`p`. Both ``inf`` where the indices are not increasing."""

    def __init__(self, smp: DPMSolver, sde: LinearSDEBase, score_fn, X: Tensor, cand: Tensor, w: Tensor):
        K = X.shape[0]
        nd = X.dim() - 2
        a, s = sde.marginal(cand)
        lam = a.log() - s.log()
        with torch.no_grad():
            M = torch.stack([self._predict(smp, sde, score_fn, X[k], cand[k]) for k in range(K)])

        def shaped(v):  # (J,) -> (J, 1, 1...) against (J, B, *event)
            return v.reshape(v.shape + (1,) * (nd + 1))

        def cost(x_hat, j_idx):  # x_hat (..., J, B, *event) against X[j] -> (..., J)
            e = (x_hat - X[j_idx]).flatten(-nd).norm(dim=-1).mean(dim=-1)
            return e * w[j_idx]

        inf = float("inf")
        c1 = torch.full((K, K), inf, dtype=torch.float64)
        c2 = torch.full((K, K, K), inf, dtype=torch.float64)
        midpoint = smp.solver_type == "midpoint"
        # chunk the previous points so that a block stays near 2**24 numbers
        per = max(1, X[0].numel())
        with torch.no_grad():
            for i in range(K - 1):
                j = torch.arange(i + 1, K)
                h = shaped(lam[j] - lam[i])
                a_t, s_t = shaped(a[j]), shaped(s[j])
                xi, mi = X[i], M[i]
                x1 = smp._propagate(xi, a[i], s[i], a_t, s_t, h, [mi])
                c1[i, i + 1:] = cost(x1, j).double()
                if i == 0:
                    continue
                chunk = max(1, (1 << 24) // (per * len(j)))
                for p0 in range(0, i, chunk):
                    p = torch.arange(p0, min(i, p0 + chunk))
                    d = (mi - M[p]) / (lam[i] - lam[p]).reshape((-1,) + (1,) * (nd + 1))  # (P, B, *event)
                    d = d.unsqueeze(1)  # (P, 1, B, *event) against (J, B, *event)
                    x2 = smp._propagate(xi, a[i], s[i], a_t, s_t, h, [mi, d], midpoint=midpoint)
                    c2[p0:p0 + len(p), i, i + 1:] = cost(x2, j).double()
        self.c1, self.c2 = c1, c2

    @staticmethod
    def _predict(smp: DPMSolver, sde, score_fn, x: Tensor, t: Tensor) -> Tensor:
        tb = t.expand(x.shape[0])
        score = score_fn(x, tb)
        return sde.to_x0(score, x, t, "score") if smp.prediction == "data" else sde.to_eps(score, x, t, "score")

    def step(self, order: int, p: int | None, i: int, j: int) -> float:
        if order >= 2 and p is not None:
            return float(self.c2[p, i, j])
        return float(self.c1[i, j])

    def path_cost(self, path: list[int], orders: list[int] | None) -> float:
        total = 0.0
        for n in range(len(path) - 1):
            q = orders[n] if orders is not None else 1
            total += self.step(q, path[n - 1] if n > 0 else None, path[n], path[n + 1])
        return total


class _OneStepCosts:
    """Local costs of one step of any deterministic sampler from each teacher state to each later
    candidate, through :func:`~scoresde.sample` (``K (K - 1) / 2`` one-step solves)."""

    def __init__(self, smp: Sampler, sde: SDE, score_fn, X: Tensor, cand: Tensor, w: Tensor):
        K, nd = X.shape[0], X.dim() - 2
        c1 = torch.full((K, K), float("inf"), dtype=torch.float64)
        evaluations = 0
        for i in range(K - 1):
            for j in range(i + 1, K):
                res = sample(score_fn, sde, tuple(X[i].shape), sampler=smp, grid=cand[[i, j]], x_start=X[i],
                             denoise=False, check_every=0)
                evaluations += res.nfe * X.shape[1]
                e = (res.x - X[j]).flatten(-nd).norm(dim=-1).mean()
                c1[i, j] = float(e * w[j])
        self.c1, self.evaluations = c1, evaluations

    def path_cost(self, path: list[int], orders=None) -> float:
        return float(sum(self.c1[path[n], path[n + 1]] for n in range(len(path) - 1)))


def _dp(costs, K: int, steps: int, caps: list[int] | None, lams: Tensor | None = None,
        ratio: float | None = None) -> list[int]:
    r"""The path :math:`0 = k_0 < \dots < k_N = K - 1` of ``steps`` steps of least total cost.

    With ``caps`` (multistep), step ``n`` may have order 2 when ``caps[n] >= 2``, and then (with a
    step ratio ``ratio``) only when :math:`h_{ij} \le` ``ratio`` :math:`h_{pi}` (the sampler's
    rule); an order-2 step costs ``c2[p, i, j]``, so the value is kept per last pair:
    ``V[p, i]`` = least cost of ``n`` steps ending ``p -> i``."""
    c1 = costs.c1
    if caps is None:
        V = c1[0].clone()  # V[i]: least cost of n steps from 0 to i
        back = []
        for _ in range(1, steps):
            V, arg = (V[:, None] + c1).min(dim=0)  # over the previous point i of j
            back.append(arg)
        path = [K - 1]
        for arg in reversed(back):
            path.append(int(arg[path[-1]]))
        path.append(0)
        return path[::-1]
    c2 = costs.c2
    if ratio is not None:
        lam = lams.double()
        h = lam[None, :] - lam[:, None]  # h[a, b] = lam_b - lam_a
        ok = h[None, :, :] <= ratio * h[:, :, None]  # ok[p, i, j]: h_ij <= ratio * h_pi
        c2 = torch.where(ok, c2, c1.unsqueeze(0).expand(K, K, K))
    V = torch.full((K, K), float("inf"), dtype=torch.float64)
    V[0] = c1[0]  # one step 0 -> i (order 1: no history)
    back = []
    for n in range(1, steps):
        step_cost = c2 if caps[n] >= 2 else c1.unsqueeze(0).expand(K, K, K)
        V, arg = (V[:, :, None] + step_cost).min(dim=0)  # (i, j): the best p
        back.append(arg)
    path = [K - 1, int(torch.argmin(V[:, K - 1]))]
    for arg in reversed(back):
        path.append(int(arg[path[-1], path[-2]]))
    return path[::-1]


def _global_error(smp: Sampler, sde: SDE, score_fn, X: Tensor, times: Tensor) -> float:
    """Mean L2 distance between the sampler's end state on ``times`` from the teacher's start
    :math:`X_0` (no denoising) and the teacher's end :math:`X_{K-1}` (inf if not finite)."""
    try:
        res = sample(score_fn, sde, tuple(X[0].shape), sampler=smp, grid=times, x_start=X[0], denoise=False,
                     check_every=0)
    except NonFiniteError:
        return float("inf")
    e = (res.x - X[-1]).flatten(1).norm(dim=1).mean()
    return float(e) if bool(torch.isfinite(e)) else float("inf")


def _refine(smp: Sampler, sde: SDE, score_fn, X: Tensor, cand: Tensor, path: list[int],
            moves: tuple[int, ...] = (8, 4, 2, 1), sweeps: int = 3, max_runs: int = 150) -> tuple[list[int], int, float]:
    r"""Coordinate descent on the sampler's *global* error from the DP's path: move one interior
    point at a time by ``moves`` candidates (each way) while the mean L2 distance between the
    sampler's end state (from the teacher's start :math:`X_0`, on the calibration batch, no
    denoising) and the teacher's :math:`X_{K-1}` goes down; at most ``max_runs`` runs (each
    ``steps`` steps on the batch). Returns the path, the runs made and its error."""
    def error(p):
        return _global_error(smp, sde, score_fn, X, cand[p])

    best, runs = error(path), 1
    for _ in range(sweeps):
        improved = False
        for m in moves:
            for k in range(1, len(path) - 1):
                for d in (-m, m):
                    new = list(path)
                    new[k] += d
                    if not new[k - 1] < new[k] < new[k + 1]:
                        continue
                    if runs >= max_runs:
                        return path, runs, best
                    e = error(new)
                    runs += 1
                    if e < best:
                        best, path, improved = e, new, True
        if not improved:
            break
    return path, runs, best


# ---- files ----------------------------------------------------------------------------------------
def _sde_record(sde: SDE) -> dict:
    spec = sde.spec() if callable(getattr(sde, "spec", None)) else None
    return {"class": type(sde).__name__, "spec": spec, "repr": repr(sde)}


def _sampler_record(sampler: str | Sampler | None, options: dict | None) -> tuple[str | None, dict]:
    if sampler is None:
        return None, dict(options or {})
    if isinstance(sampler, Sampler):
        return sampler.name, {**sampler.options(), **(options or {})}
    return str(sampler), dict(options or {})


@dataclass
class GridFile:
    """A grid read by :func:`load_grid`: the times and what they were fitted for."""

    times: Tensor
    sampler: str | None
    steps: int
    eps: float
    sde: dict | None
    sampler_options: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def save_grid(path: str | os.PathLike, times, *, sde: SDE | None = None, sampler: str | Sampler | None = None,
              sampler_options: dict | None = None, **metadata) -> Path:
    """Write a grid as JSON: the times, the sampler (and its options), steps, eps, the SDE (class,
    constructor arguments, repr) and any JSON-serialisable ``metadata`` (e.g. ``calibration=128``).

    Written atomically (a temporary file, fsync, rename). Returns the path."""
    from .._files import atomic_write_bytes

    if sde is not None and not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    t = check_user_grid(sde, times) if sde is not None else _check_times("times", times)
    name, opts = _sampler_record(sampler, sampler_options)
    doc = {"format": GRID_FORMAT, "version": GRID_VERSION, "times": [float(v) for v in t.tolist()],
           "steps": len(t) - 1, "eps": float(t[-1]), "t_start": float(t[0]), "sampler": name,
           "sampler_options": opts, "sde": _sde_record(sde) if sde is not None else None}
    try:
        text = json.dumps({**doc, "metadata": metadata}, indent=1, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ArgumentError(f"metadata must be JSON values (numbers, strings, lists, dicts): {err}") from None
    path = Path(path)
    atomic_write_bytes(path, (text + "\n").encode())
    return path


def _check_times(name: str, times) -> Tensor:
    try:
        t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"{name} must be a sequence of times, got {times!r}") from None
    if t.dim() != 1 or t.numel() < 2 or not bool(torch.isfinite(t).all()) or not bool((t[1:] < t[:-1]).all()) \
            or float(t[-1]) <= 0:
        raise ArgumentError(f"{name} must be at least 2 strictly decreasing positive times, got {t.tolist()}")
    return t


def load_grid(path: str | os.PathLike, *, sde: SDE | None = None, sampler: str | Sampler | None = None) -> GridFile:
    """Read a grid written by :func:`save_grid`; with ``sde`` / ``sampler``, check it was fitted
    for them (:func:`check_grid_for`).

    Raises:
        ArgumentError: a file that is not a grid file (not JSON, another format, missing or
            malformed fields, times not strictly decreasing in ``(0, T]``), or one made for another
            SDE or sampler. ``OSError`` when it cannot be read.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArgumentError(f"grid file {str(path)!r} is not JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != GRID_FORMAT:
        raise ArgumentError(f"grid file {str(path)!r} is not a scoresde grid file (no \"format\": \"{GRID_FORMAT}\"); "
                            "write one with ss.sampling.save_grid or `scoresde fit-grid`")
    if doc.get("version") != GRID_VERSION:
        raise ArgumentError(f"grid file {str(path)!r} has version {doc.get('version')!r}; this scoresde reads "
                            f"version {GRID_VERSION}")
    times = doc.get("times")
    if not isinstance(times, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in times):
        raise ArgumentError(f"grid file {str(path)!r}: \"times\" must be a list of numbers")
    t = _check_times(f"grid file {str(path)!r}: times", times)
    steps = doc.get("steps")
    if steps != len(t) - 1:
        raise ArgumentError(f"grid file {str(path)!r}: \"steps\" is {steps!r} but it holds {len(t)} times "
                            f"({len(t) - 1} steps)")
    name = doc.get("sampler")
    if name is not None and not isinstance(name, str):
        raise ArgumentError(f"grid file {str(path)!r}: \"sampler\" must be a name, got {name!r}")
    rec = doc.get("sde")
    if rec is not None and not (isinstance(rec, dict) and isinstance(rec.get("class"), str)):
        raise ArgumentError(f"grid file {str(path)!r}: \"sde\" must record the SDE's class, got {rec!r}")
    opts = doc.get("sampler_options") or {}
    meta = doc.get("metadata") or {}
    if not isinstance(opts, dict) or not isinstance(meta, dict):
        raise ArgumentError(f"grid file {str(path)!r}: \"sampler_options\" and \"metadata\" must be objects")
    grid = GridFile(times=t, sampler=name, steps=len(t) - 1, eps=float(t[-1]), sde=rec, sampler_options=opts,
                    metadata=meta)
    if sde is not None or sampler is not None:
        check_grid_for(grid, sde=sde, sampler=sampler, where=f"grid file {str(path)!r}")
    return grid


def check_grid_for(grid: GridFile, *, sde: SDE | None = None, sampler: str | Sampler | None = None,
                   where: str = "the grid") -> None:
    """Raise :class:`ArgumentError` unless ``grid`` was fitted for ``sde`` (same class and
    constructor arguments, or the same repr when they are not recorded) and ``sampler`` (same
    name), and lies inside ``(0, sde.T]``."""
    if sde is not None:
        rec, now = grid.sde, _sde_record(sde)
        if rec is None:
            raise ArgumentError(f"{where} records no SDE, so it cannot be checked against {now['repr']}")
        same = rec.get("class") == now["class"] and (
            rec.get("spec") == now["spec"] if (rec.get("spec") is not None or now["spec"] is not None)
            else rec.get("repr") == now["repr"])
        if not same:
            raise ArgumentError(f"{where} was fitted for the SDE {rec.get('repr', rec.get('class'))} "
                                f"({json.dumps(rec.get('spec'))}), not for {now['repr']} ({json.dumps(now['spec'])}); "
                                "fit a grid for this SDE")
        check_user_grid(sde, grid.times)
    if sampler is not None:
        name = sampler.name if isinstance(sampler, Sampler) else str(sampler)
        if grid.sampler is not None and grid.sampler != name:
            raise ArgumentError(f"{where} was fitted for the sampler {grid.sampler!r}, not {name!r}; "
                                f"sample with --sampler {grid.sampler} or fit a grid for {name!r}")
