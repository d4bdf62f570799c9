r"""Progressive distillation of the deterministic DDIM sampler (Salimans & Ho 2022).

The sampler distilled is DDIM with :math:`\eta = 0` (``sampler="ddim"``, equal to ``dpm_solver``
of order 1), which steps from :math:`t` to :math:`t' < t` with the data prediction
:math:`\hat x_0(x_t, t)` of a score :math:`s` (Tweedie: :math:`\hat x_0 = (x_t + \sigma_t^2 s)/\alpha_t`):

.. math:: x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t + \Big(\alpha_{t'} - \frac{\sigma_{t'}}{\sigma_t}\alpha_t\Big)\hat x_0 .

**One round.** The teacher runs DDIM on a grid :math:`t_0 = T > t_1 > \dots > t_{2K} = \varepsilon`;
the student takes every second time, :math:`\tau_i = t_{2i}`, so one student step
:math:`\tau_i \to \tau_{i+1}` must do what two teacher steps :math:`t_{2i} \to t_{2i+1} \to t_{2i+2}` do.
With :math:`x_t = \alpha_t x_0 + \sigma_t n` drawn from the data by the forward marginal at
:math:`t = \tau_i` (:math:`i` uniform), the teacher's two steps give :math:`x''` at
:math:`t'' = \tau_{i+1}`, and the target :math:`\tilde x_0` is the data prediction that makes *one*
DDIM step from :math:`x_t` land exactly on :math:`x''` (Salimans & Ho, Algorithm 2):

.. math:: \tilde x_0 = \frac{x'' - (\sigma_{t''}/\sigma_t)\,x_t}{\alpha_{t''} - (\sigma_{t''}/\sigma_t)\,\alpha_t} .

The loss is the x0 error with the paper's **truncated-SNR weighting**

.. math:: \mathcal L(\theta) = \mathbb E_{i, x_0, n}\ \max\!\Big(\frac{\alpha_t^2}{\sigma_t^2}, 1\Big)\,
          \big\|\tilde x_0 - \hat x_{0,\theta}(x_t, t)\big\|^2 .

Why this one: where the SNR is large it is :math:`\|\tilde\epsilon - \hat\epsilon_\theta\|^2`, the usual
noise-prediction loss, and where it is small -- the first steps of a few-step student, down to
the single step from :math:`t = T`, where :math:`\alpha_T \approx 0.007` on VP -- the weight of a plain
:math:`\epsilon` loss (SNR) would vanish, although there the student's output *is* its
:math:`\hat x_0` (one step to :math:`\varepsilon` moves :math:`x_T` by :math:`\approx \hat x_0`); the truncation
keeps the x0 error itself weighted by at least one. (Salimans & Ho's "SNR+1" on the v error
gives the same weights up to a factor in [1, 2].) Use a student whose network predicts
:math:`x_0` or :math:`v` (``ScoreModel(..., parameterization="x0" | "v")``): an ``eps`` network must
divide by :math:`\alpha_T` to reach :math:`\hat x_0` at :math:`t = T`, which is what makes eps-students
unstable at one or two steps in the paper.

**The final denoising step.** ``ss.sample`` ends by default with Tweedie's step at
:math:`\varepsilon` (``denoise=True``, one more evaluation), which the CLI's ``sample`` does too. So
that it stays the teacher's, one index in :math:`K + 1` is the denoising one: :math:`x_\varepsilon` from
the forward marginal and the target the teacher's own :math:`\hat x_0(x_\varepsilon, \varepsilon)`, with
weight 1: that step's output *is* :math:`\hat x_0`, so its x0 error is the sample's error, whereas
the SNR there (:math:`10^4` at :math:`\sigma/\alpha = 0.01`) would make this one index outweigh the
K steps (measured: with it, a fresh student's error at :math:`t = T` grew while the denoising
loss fell). With ``denoise=False`` the student's map ends at :math:`\varepsilon` after exactly
:math:`K` evaluations.

**Rounds.** ``distill(..., steps=N, rounds=R)`` runs R rounds, :math:`N \to N/2 \to \dots \to N/2^R` steps,
each student initialised from its teacher's weights (round 1: from the teacher network, or from
``student=`` when the teacher is a plain score function such as the exact score); the next
round's teacher is this round's averaged (EMA) student. Each round is one
:class:`~scoresde.training.Trainer` run in ``out_dir/round_<r>/`` -- EMA, atomic checkpoints,
CSV logs, progress, torchrun -- plus ``grid.json``, the student's times
(:func:`~scoresde.sampling.save_grid`, for ``scoresde sample --grid``). A rerun skips the rounds
that are finished and resumes an interrupted one from its newest checkpoint, bit for bit as
the uninterrupted run (on the CPU). Each round records its teacher's weights by their SHA-256, so
a round distilled from other weights (an earlier round extended or retrained) is refused
rather than reused: delete it and the rounds after it to redo them.

**Guided models** (``guidance=(w_min, w_max)``; Meng et al. 2023, "On distillation of guided
diffusion models"). Classifier-free guidance costs two evaluations per step,
:math:`\hat x_0^w = \hat x_0^u + w(\hat x_0^c - \hat x_0^u)` (the data prediction is affine in the
score, so this is :math:`s_u + w(s_c - s_u)` in data units). *Stage one*
(:class:`GuidanceDistillationLoss`, ``out_dir/round_0/``): a copy of the class-conditional
teacher whose network also takes :math:`w` (:func:`~scoresde.models.with_guidance_input`; the new
input starts at zero, so the copy starts as the conditional model) learns
:math:`\hat x_0^w(x_t)` at the N-step grid's times for :math:`w \sim U[w_{min}, w_{max}]`, with the
loss above. *Stage two*: the R progressive rounds, each drawing :math:`w` per sample and taking
the target from two steps of its teacher at that :math:`w` (one evaluation each: the teacher is
the previous student). The final student serves every weight of the range in
:math:`N/2^R` evaluations, ``ss.sample(res.student, sde, shape, sampler="ddim", grid=res.grid,
cond=labels, guidance=w, denoise=False)``; a weight outside the range is refused.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ArgumentError, check_callable, check_int
from ..models import ScoreModel, with_guidance_input
from ..models.embeddings import check_guidance_range
from ..sde import SDE, LinearSDEBase
from ..sde.base import expand_to
from .config import TrainConfig
from .losses import shard_rows
from .trainer import Trainer

#: the grid of the teacher's N steps when none is given: equal steps in t (see distillation_grid)
DEFAULT_GRID = "uniform"
GRID_FILE = "grid.json"


def _data_x0(model: Callable, x: Tensor, t: Tensor, sde: LinearSDEBase, y: Tensor | None = None,
             w: Tensor | None = None) -> Tensor:
    r""":math:`\hat x_0(x, t)` of a score model, in data units (guided by weights ``w`` if given).

    A :class:`ScoreModel` with an x0 / v / eps network is converted from its raw output (no
    round trip through the score, which loses digits where :math:`\alpha_t` is small); any other
    callable is a score function, converted by Tweedie. With ``w``, a model that takes the
    weight as an input is called once; any other is guided by two evaluations,
    :math:`\hat x_0^u + w(\hat x_0^c - \hat x_0^u)` (the data prediction is affine in the score).
    """
    if w is not None:
        if getattr(model, "guidance_range", None) is None:
            x0_u = _data_x0(model, x, t, sde)
            return x0_u + expand_to(w, x) * (_data_x0(model, x, t, sde, y) - x0_u)
        kw = {"y": y, "guidance": w}
    else:
        kw = {} if y is None else {"y": y}
    if isinstance(model, ScoreModel) and model.parameterization != "score":
        out = model.net_output(x, t, **kw)
        return model.data_std * sde.to_x0(out, x, t, model.parameterization, data_std=model.data_std)
    return sde.to_x0(model(x, t, **kw), x, t, "score")


class DistillationLoss:
    r"""The per-sample loss of one progressive-distillation round (see the module for the math).

    Args:
        teacher: the teacher score function ``teacher(x, t)`` (a network or any ``score_fn``);
            it is called under ``torch.no_grad()``.
        sde: the linear SDE of the teacher.
        times: the teacher's grid :math:`t_0 > \dots > t_{2K}`, an odd number (:math:`\ge 3`) of
            decreasing times; the student's grid is ``times[::2]``.
        denoise: also train the final Tweedie step at :math:`t_{2K}` (one index in :math:`K+1`).

    ``loss(model, x0, generator)`` returns ``(batch,)`` losses; the Trainer averages them.
    """

    #: accepts ``shard=``: a data-parallel run draws the global batch's indices and noise
    shardable = True

    #: the ``config["loss"]`` name
    name = "progressive_distillation"

    def __init__(self, teacher: Callable, sde: SDE, times: Sequence[float] | Tensor, *, denoise: bool = True,
                 guidance: tuple[float, float] | None = None):
        check_callable("teacher", teacher, "teacher(x, t) -> score")
        if not isinstance(sde, LinearSDEBase):
            raise ArgumentError(f"sde must be a linear SDE (LinearSDEBase) for DDIM distillation, got {type(sde).__name__}")
        t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
        if t.dim() != 1 or t.numel() < 2:
            raise ArgumentError(f"times must be a 1-D grid of decreasing times, got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()) or not bool((t[1:] < t[:-1]).all()) or float(t[-1]) <= 0 \
                or float(t[0]) > sde.T:
            raise ArgumentError(f"times must be strictly decreasing inside (0, T], got {t.tolist()}")
        self.teacher, self.sde, self.denoise = teacher, sde, bool(denoise)
        self.guidance = None if guidance is None else check_guidance_range("guidance", guidance)
        self.teacher_times = t
        self.student_times = self._student_grid(t).clone()
        self.K = len(self.student_times) - 1
        # per student index i: (alpha, sigma) at tau_i = t_{2i}, at t_{2i+1} (m) and at tau_{i+1} (index K: the denoising one)
        self._a, self._s = sde.marginal(self.student_times)
        alpha, sigma = sde.marginal(t)
        self._am = torch.cat([alpha[1::2], alpha[-1:]])[: self.K + 1]
        self._sm = torch.cat([sigma[1::2], sigma[-1:]])[: self.K + 1]
        self.last_loss: Tensor | None = None
        self.config = {"loss": self.name, "target": "x0", "weighting": "truncated_snr",
                       "teacher_steps": len(t) - 1, "student_steps": self.K, "denoise": self.denoise,
                       "times": [float(v) for v in t.tolist()]}
        if self.guidance is not None:  # recorded only when set: unguided configs stay as they were
            self.config["guidance"] = list(self.guidance)

    def _student_grid(self, t: Tensor) -> Tensor:
        """Every second time of the teacher's: one student step does two teacher steps."""
        if t.numel() < 3 or t.numel() % 2 == 0:
            raise ArgumentError(f"times must be the teacher's grid of 2K + 1 >= 3 times, got {t.numel()}")
        return t[::2]

    # ---- the target ---------------------------------------------------------------------------
    def ddim_step(self, x: Tensor, x0: Tensor, a: Tensor, s: Tensor, a2: Tensor, s2: Tensor) -> Tensor:
        r"""One DDIM (:math:`\eta = 0`) step from :math:`(\alpha, \sigma)` to :math:`(\alpha', \sigma')`:
        :math:`(\sigma'/\sigma)\,x + (\alpha' - \alpha\sigma'/\sigma)\,\hat x_0` (per-sample coefficients)."""
        r = expand_to(s2 / s, x)
        return r * x + (expand_to(a2, x) - r * expand_to(a, x)) * x0

    @torch.no_grad()
    def target(self, xt: Tensor, idx: Tensor, y: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        r""":math:`\tilde x_0` for states ``xt`` at the student times ``student_times[idx]``: two teacher
        DDIM steps solved for the one-step data prediction (index ``K``: the teacher's
        :math:`\hat x_0` at :math:`t_{2K}`); with guidance weights ``w``, of the teacher guided by them."""
        dev, dt = xt.device, xt.dtype
        idx = idx.to(dev)
        T = self.teacher_times.to(device=dev, dtype=dt)
        a, s = self._a.to(dev, dt)[idx], self._s.to(dev, dt)[idx]
        out = torch.empty_like(xt)
        step = idx < self.K
        if bool(step.any()):
            i = idx[step]
            x, yi, wi = xt[step], None if y is None else y[step], None if w is None else w[step]
            a0, s0 = a[step], s[step]
            am, sm = self._am.to(dev, dt)[i], self._sm.to(dev, dt)[i]
            a2, s2 = self._a.to(dev, dt)[i + 1], self._s.to(dev, dt)[i + 1]
            x_mid = self.ddim_step(x, _data_x0(self.teacher, x, T[2 * i], self.sde, yi, wi), a0, s0, am, sm)
            x_end = self.ddim_step(x_mid, _data_x0(self.teacher, x_mid, T[2 * i + 1], self.sde, yi, wi),
                                   am, sm, a2, s2)
            r = expand_to(s2 / s0, x)
            out[step] = (x_end - r * x) / (expand_to(a2, x) - r * expand_to(a0, x))
        last = ~step
        if bool(last.any()):
            x = xt[last]
            out[last] = _data_x0(self.teacher, x, T[-1].expand(x.shape[0]), self.sde, None if y is None else y[last],
                                 None if w is None else w[last])
        return out

    # ---- the loss -----------------------------------------------------------------------------
    def draw(self, x0: Tensor, generator: torch.Generator | None = None, *,
             shard: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        r"""The training states: student indices :math:`i` uniform in :math:`[0, K]` (``[0, K)``
        without ``denoise``) and :math:`x_t = \alpha_t x_0 + \sigma_t n` at :math:`t = \tau_i`; the
        draws cover the ``total`` rows of ``shard=(start, total)`` and this shard's are kept."""
        total, rows = shard_rows(x0, shard)
        gen_dev = generator.device if generator is not None else x0.device
        idx = torch.randint(0, self.K + int(self.denoise), (total,), generator=generator, device=gen_dev)
        noise = torch.randn((total, *x0.shape[1:]), generator=generator, device=gen_dev, dtype=x0.dtype)
        idx, noise = idx[rows].to(x0.device), noise[rows].to(x0.device)
        alpha, sigma = self._a.to(x0.device, x0.dtype)[idx], self._s.to(x0.device, x0.dtype)[idx]
        return idx, expand_to(alpha, x0) * x0 + expand_to(sigma, x0) * noise

    def draw_weights(self, x0: Tensor, generator: torch.Generator | None = None, *,
                     shard: tuple[int, int] | None = None) -> Tensor:
        r"""Guidance weights :math:`w \sim U[w_{min}, w_{max}]`, one per row (drawn after :meth:`draw`'s)."""
        total, rows = shard_rows(x0, shard)
        gen_dev = generator.device if generator is not None else x0.device
        u = torch.rand((total,), generator=generator, device=gen_dev, dtype=x0.dtype)[rows].to(x0.device)
        lo, hi = self.guidance
        return lo + (hi - lo) * u

    def __call__(self, model: Callable, x0: Tensor, generator: torch.Generator | None = None, *,
                 shard: tuple[int, int] | None = None, y: Tensor | None = None) -> Tensor:
        """Per-sample losses of ``x0``, shape ``(batch,)`` (``shard=(start, total)``: as for
        :class:`~scoresde.training.DSMLoss`, the draws cover the global batch)."""
        idx, xt = self.draw(x0, generator, shard=shard)
        w = None
        if self.guidance is not None:
            if y is None:
                raise ArgumentError("guidance distillation needs class labels: give labelled data (e.g. "
                                    "TensorData(x, labels=y)) and a class-conditional student (num_classes=K)")
            w = self.draw_weights(x0, generator, shard=shard)
        t = self.student_times.to(device=x0.device, dtype=x0.dtype)[idx]
        alpha, sigma = self._a.to(x0.device, x0.dtype)[idx], self._s.to(x0.device, x0.dtype)[idx]
        target = self.target(xt, idx, y, w)
        pred = _data_x0(model, xt, t, self.sde, y, w)
        weight = (alpha.square() / sigma.square()).clamp(min=1.0)  # truncated SNR: max(SNR, 1)
        # the denoising step outputs x0_hat itself: its x0 error is the sample's error (weight 1; SNR
        # there, 1e4 at sigma/alpha = 0.01, would drown the K steps' losses)
        weight = torch.where(idx < self.K, weight, torch.ones_like(weight))
        losses = weight * (pred - target).flatten(1).square().sum(1)
        self.last_loss = losses.detach().mean()
        return losses


class GuidanceDistillationLoss(DistillationLoss):
    r"""Stage one of guided distillation (Meng et al. 2023): a student that takes the guidance
    weight as an input learns the guided teacher's data prediction.

    With :math:`w \sim U[w_{min}, w_{max}]` per sample and a state :math:`x_t` at a time of the
    grid (all ``len(times)`` of them, uniform), the target is the teacher's classifier-free
    guided :math:`\hat x_0^w = \hat x_0^u + w(\hat x_0^c - \hat x_0^u)` at :math:`x_t` (two evaluations;
    one for a teacher that takes the weight), and the loss the same truncated-SNR-weighted x0
    error as :class:`DistillationLoss` (weight 1 at the last time). The student keeps the
    teacher's grid: the progressive rounds that follow halve it with the weight as an input.
    """

    name = "guidance_distillation"

    def __init__(self, teacher: Callable, sde: SDE, times: Sequence[float] | Tensor, guidance: tuple[float, float],
                 *, denoise: bool = True):
        super().__init__(teacher, sde, times, denoise=denoise, guidance=guidance)

    def _student_grid(self, t: Tensor) -> Tensor:
        return t

    @torch.no_grad()
    def target(self, xt: Tensor, idx: Tensor, y: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        r"""The guided teacher's :math:`\hat x_0^w` at ``xt`` and the times ``student_times[idx]``."""
        t = self.student_times.to(device=xt.device, dtype=xt.dtype)[idx.to(xt.device)]
        return _data_x0(self.teacher, xt, t, self.sde, y, w)


# ---- the rounds ------------------------------------------------------------------------------
@dataclasses.dataclass
class DistilledStudent:
    """One round's student: ``model`` (averaged weights, eval mode, no gradients) and the
    ``grid`` of its ``steps`` DDIM steps (float64 times, ``steps + 1`` of them)."""

    model: nn.Module
    grid: Tensor
    round: int
    steps: int


@dataclasses.dataclass
class RoundInfo:
    """What one round cost: the teacher's and the student's steps, the optimiser steps, the
    wall time spent training it in this call (0 for a round found finished), the final logged
    loss, the step it resumed from, and its run folder (None without ``out_dir``)."""

    round: int
    teacher_steps: int
    student_steps: int
    train_steps: int
    seconds: float
    final_loss: float
    resumed_from: int
    path: Path | None


@dataclasses.dataclass
class DistillResult:
    """What :func:`distill` returns: the final ``student`` and its ``grid``, every round's
    student (``students``, oldest first) and its training (``rounds``), and the teacher's grid
    (``teacher_grid``, N steps)."""

    student: nn.Module
    grid: Tensor
    students: list[DistilledStudent]
    rounds: list[RoundInfo]
    teacher_grid: Tensor


def distillation_grid(sde: SDE, steps: int, grid: str | Sequence[float] | Tensor = DEFAULT_GRID,
                      eps: float | None = None) -> Tensor:
    r"""The teacher's grid of ``steps`` DDIM steps from :math:`T` to ``eps`` (float64).

    Default: equal steps in :math:`t` from :math:`T` down to DDIM's own default end time, where
    :math:`\sigma_t/\alpha_t = 0.01` (:meth:`~scoresde.sampling.Sampler.default_eps`). The students
    copy the teacher's map, so the teacher's grid is chosen by how close its N-step DDIM map is to
    the exact probability-flow map: at N = 64 under VP, equal steps in :math:`t` land 0.042 from it
    on the ring mixture and 0.128 on a 16-D mixture, against 0.065 and 0.159 for equal steps in
    log-SNR (DDIM's own few-step default; under VE the two grids are the same). A uniform grid
    halves into uniform grids, so every student's grid is the uniform grid of its number of
    steps. ``grid`` may also be ``"log_snr"``, ``"edm"`` or the times themselves (then ``steps``
    must match).
    """
    from ..sampling.ddim import DDIM
    from ..sampling.grids import time_grid

    if isinstance(grid, str):
        end = DDIM().default_eps(sde) if eps is None else eps
        return time_grid(sde, steps, sde.T, end, grid)
    times = time_grid(sde, 0, sde.T, 0.0, grid)
    if len(times) - 1 != steps:
        raise ArgumentError(f"grid has {len(times) - 1} steps but steps={steps}")
    return times


def _final_loss(folder: Path | None, loss: DistillationLoss) -> float:
    """The last logged loss (the mean over its ``log_every`` steps), else the last batch's."""
    if folder is not None and (folder / "metrics.csv").exists():
        with open(folder / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            return float(rows[-1]["loss"])
    return float(loss.last_loss) if loss.last_loss is not None else math.nan


def teacher_fingerprint(teacher: Callable) -> str | None:
    """A SHA-256 of a network teacher's weights (None for a plain score function), recorded in
    each round's metadata: a round found finished but distilled from other weights -- an earlier
    round retrained or extended, another teacher -- is refused instead of silently reused."""
    if not isinstance(teacher, nn.Module):
        return None
    digest = hashlib.sha256()
    for name, value in sorted(teacher.state_dict().items()):
        v = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{v.dtype}:{tuple(value.shape)}".encode())
        digest.update(v.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _trainable_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).requires_grad_(True).train()


def distill(
    teacher: Callable,
    sde: SDE,
    data,
    *,
    steps: int = 64,
    rounds: int = 1,
    student: nn.Module | None = None,
    out_dir: str | Path | None = None,
    train_steps: int | Sequence[int] = 2000,
    grid: str | Sequence[float] | Tensor = DEFAULT_GRID,
    eps: float | None = None,
    denoise: bool = True,
    guidance: tuple[float, float] | None = None,
    guidance_steps: int | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device | None = None,
    metadata: dict[str, Any] | None = None,
    **overrides,
) -> DistillResult:
    r"""Progressive distillation of DDIM (:math:`\eta=0`) from ``steps`` to ``steps / 2**rounds`` steps.

    Args:
        teacher: the teacher's score, ``teacher(x, t)``: a trained network (e.g. a
            :class:`~scoresde.models.ScoreModel`, ``ss.load_run(...).model``) or any ``score_fn``
            (e.g. ``gmm.score_fn(sde)``, the exact score).
        sde: the linear SDE the teacher was trained under.
        data: the training data (a Tensor ``(n, ...)`` or a Dataset, as for the Trainer); the
            states :math:`x_t` are drawn from it by the forward marginal.
        steps: N, the teacher's number of DDIM steps; divisible by ``2**rounds``.
        rounds: R >= 1 halvings.
        student: the network to start round 1 from (required when ``teacher`` is not an
            ``nn.Module``; default: a copy of the teacher). It must be a score model
            ``student(x, t)``; an x0- or v-parameterised ``ScoreModel`` is recommended (see the module).
        out_dir: the folder of the rounds' run folders ``round_1/``, ... (None: nothing written,
            no resume).
        train_steps: optimiser steps per round, one number or one per round.
        grid, eps: the teacher's grid (:func:`distillation_grid`; default uniform in t down
            to DDIM's default end time).
        denoise: also distil the final Tweedie step (see the module).
        guidance: ``(w_min, w_max)``: distil the classifier-free-guided teacher for every weight in
            the range into one student that takes the weight as an input (Meng et al. 2023; see
            the module). The teacher must be class-conditional and the data labelled.
        guidance_steps: optimiser steps of the guidance stage (``round_0/``; default: the first
            round's ``train_steps``).
        config, **overrides: the Trainer's configuration (:class:`TrainConfig` fields, e.g.
            ``batch_size``, ``lr``, ``ema_decay``, ``checkpoint_every``, ``seed``); ``steps`` is
            set per round from ``train_steps``.
        device: where to train (default: the Trainer's).
        metadata: JSON facts recorded with every round (the round's own facts are added).

    Returns:
        :class:`DistillResult`: ``res.student`` (eval mode; ``ss.sample(res.student, sde, shape,
        sampler="ddim", grid=res.grid, denoise=False)`` runs its ``N / 2**R`` steps), ``res.grid``,
        ``res.students`` and ``res.rounds``.

    Raises:
        ArgumentError: a teacher that is not callable, an SDE that is not linear, ``steps`` not
            divisible by ``2**rounds``, ``rounds < 1``, a missing or non-Module ``student``,
            ``train_steps`` of the wrong length, ``steps`` as a Trainer override.
    """
    check_callable("teacher", teacher, "teacher(x, t) -> score")
    if not isinstance(sde, LinearSDEBase):
        raise ArgumentError(f"sde must be a linear SDE (LinearSDEBase): DDIM and the distillation target need its "
                            f"closed-form marginals; got {type(sde).__name__}")
    rounds = check_int("rounds", rounds, 1)
    steps = check_int("steps", steps, 2)
    if steps % (2**rounds):
        raise ArgumentError(f"steps must be divisible by 2**rounds = {2**rounds} (each round halves the steps), "
                            f"got steps={steps} with rounds={rounds}")
    teacher_range = getattr(teacher, "guidance_range", None)
    if guidance is None:
        guidance = teacher_range  # a teacher that already takes the weight: its rounds keep it
    else:
        guidance = check_guidance_range("guidance", guidance)
        if teacher_range is not None and tuple(teacher_range) != guidance:
            raise ArgumentError(f"guidance={guidance} but the teacher takes weights in {tuple(teacher_range)}: "
                                f"leave guidance= out to distil it over its own range")
    guided_stage = guidance is not None and teacher_range is None  # Meng et al.'s stage one is needed
    if student is None:
        if not isinstance(teacher, nn.Module):
            raise ArgumentError(f"student: the teacher is a plain score function ({type(teacher).__name__}), so give "
                                f"the network to distil into as student=, e.g. ScoreModel(MLP(...), sde, 'v')")
        if guided_stage and not isinstance(teacher, ScoreModel):
            raise ArgumentError(f"student: with guidance= the student must take the weight as an input; the teacher "
                                f"({type(teacher).__name__}) is not a ScoreModel to copy, so give student= built with "
                                f"guidance_range={guidance}")
        init = with_guidance_input(teacher, guidance) if guided_stage else teacher
    elif not isinstance(student, nn.Module):
        raise ArgumentError(f"student must be a torch.nn.Module score model, got {type(student).__name__}")
    else:
        init = student
    if guidance is not None:
        own = getattr(init, "guidance_range", None)
        if own is None or tuple(own) != guidance:
            raise ArgumentError(f"student must take the guidance weight as an input for weights in {guidance} (a "
                                f"network built with guidance_range={guidance}, see ss.models.with_guidance_input); "
                                f"it has guidance_range={own}")
        if getattr(init, "num_classes", None) is None:
            raise ArgumentError("student: guidance distillation needs a class-conditional student (num_classes=K)")
    if guidance_steps is not None:
        guidance_steps = check_int("guidance_steps", guidance_steps)
        if not guided_stage:
            raise ArgumentError("guidance_steps is the guidance stage's length; it needs guidance= and a teacher "
                                "that does not take the weight already")
    if isinstance(train_steps, (int,)) and not isinstance(train_steps, bool):
        per_round = [check_int("train_steps", train_steps)] * rounds
    elif isinstance(train_steps, Sequence) and not isinstance(train_steps, (str, bytes)):
        if len(train_steps) != rounds:
            raise ArgumentError(f"train_steps must be one number or one per round ({rounds}), got {len(train_steps)}")
        per_round = [check_int(f"train_steps[{i}]", k) for i, k in enumerate(train_steps)]
    else:
        raise ArgumentError(f"train_steps must be an integer or a sequence of integers, got {train_steps!r}")
    if "steps" in overrides:
        raise ArgumentError("steps is the teacher's number of DDIM steps here; give the optimiser steps per round as "
                            "train_steps=")
    if metadata is not None and not isinstance(metadata, dict):
        raise ArgumentError(f"metadata must be a dict of JSON values, got {type(metadata).__name__}")
    times = distillation_grid(sde, steps, grid, eps)
    out = Path(out_dir) if out_dir is not None else None

    current_teacher: Callable = teacher
    if isinstance(teacher, nn.Module):  # a frozen copy: the caller's module keeps its mode and flags
        current_teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    start_from = init
    students, infos = [], []
    for r in range(0 if guided_stage else 1, rounds + 1):
        if r == 0:  # the guidance stage: the student learns the guided teacher on its own grid
            loss: DistillationLoss = GuidanceDistillationLoss(current_teacher, sde, times, guidance, denoise=denoise)
            n_steps = per_round[0] if guidance_steps is None else guidance_steps
        else:
            loss = DistillationLoss(current_teacher, sde, times[:: 2 ** (r - 1)], denoise=denoise, guidance=guidance)
            n_steps = per_round[r - 1]
        folder = out / f"round_{r}" if out is not None else None
        facts = {"round": r, "rounds": rounds, "steps": steps, "student_steps": loss.K, "sampler": "ddim"}
        if guidance is not None:
            facts["guidance"] = list(guidance)
        if (fingerprint := teacher_fingerprint(current_teacher)) is not None:
            facts["teacher_sha256"] = fingerprint
        meta = {**(metadata or {}), "distill": facts}
        trainer = Trainer(_trainable_copy(start_from), loss, data, folder, config=config, device=device,
                          metadata=meta, steps=n_steps, **overrides)
        if isinstance(current_teacher, nn.Module):  # our frozen copy, or the last round's student
            current_teacher.to(trainer.device)
        resumed = trainer.resume() if folder is not None else 0
        began = time.perf_counter()
        trained = trainer.step < trainer.config.steps
        trainer.fit()
        seconds = time.perf_counter() - began if trained else 0.0
        model = trainer.ema.model.eval().requires_grad_(False)
        if folder is not None and trainer.dist.is_main:
            from ..sampling.grid_fit import save_grid

            save_grid(folder / GRID_FILE, loss.student_times, sde=sde, sampler="ddim", distilled_round=r,
                      teacher_steps=len(loss.teacher_times) - 1)
        students.append(DistilledStudent(model, loss.student_times.clone(), r, loss.K))
        infos.append(RoundInfo(r, len(loss.teacher_times) - 1, loss.K, trainer.step, seconds,
                               _final_loss(folder, loss), resumed, folder))
        current_teacher = start_from = model
    return DistillResult(students[-1].model, students[-1].grid, students, infos, times)
