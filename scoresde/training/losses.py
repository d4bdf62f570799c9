r"""Score-matching losses: denoising score matching (DSM) and sliced score matching (SSM).

**DSM** (Vincent 2011; Song et al. 2021, eq. 7) for a linear SDE with
:math:`x_t = \alpha_t x_0 + \sigma_t n`:

.. math::
    \mathcal L(\theta) = \tfrac12\,\mathbb E_{t, x_0, n}\,\lambda(t)\,
    \big\| s_\theta(x_t, t) + n/\sigma_t \big\|^2
    = \tfrac12\,\mathbb E\,\frac{\lambda(t)}{\sigma_t^2}\,\big\|\sigma_t s_\theta(x_t,t) + n\big\|^2 .

* ``weighting="sigma2"``: :math:`\lambda = \sigma_t^2`, t uniform on :math:`[\epsilon, T]` -- the
  noise-prediction loss of DDPM.
* ``weighting="likelihood"``: :math:`\lambda = g(t)^2` (Song, Durkan, Murray & Ermon 2021), for
  which :math:`\mathcal L` plus a constant bounds :math:`-\log p_\theta(x_0)`
  (per sample, summed over dimensions). Its integrand :math:`g^2/\sigma^2` is sharply peaked at
  small t; with ``importance_sampling=True`` t is drawn from
  :math:`q(t) \propto g(t)^2/\sigma_t^2`. Because
  :math:`\frac{d}{dt}\log(\sigma_t^2/\alpha_t^2) = g(t)^2/\sigma_t^2` for every linear SDE, the
  primitive is :math:`-2\lambda_t` (:math:`\lambda_t` the log-SNR): sampling :math:`q` means
  drawing :math:`\lambda` uniformly on :math:`[\lambda_T, \lambda_\epsilon]` and mapping it back
  with ``sde.t_from_log_snr``, and the weight becomes the constant
  :math:`Z = 2(\lambda_\epsilon - \lambda_T)`.

**SSM** (Song, Garg, Shi & Ermon 2019) needs no transition kernel, so it serves custom
nonlinear SDEs: draw :math:`x_t` by simulating the forward SDE with torchsde, then minimise

.. math::
    \mathbb E_{t, x_t, v}\,\lambda(t)\Big[\tfrac12\|s_\theta(x_t,t)\|^2
    + v^\top \nabla_x\big(v^\top s_\theta(x_t,t)\big)\Big],\qquad v \sim \mathcal N(0, I),

equal (up to a constant) to :math:`\tfrac12\mathbb E\,\lambda\|s_\theta - \nabla\log p_t\|^2`.

Every loss here is a callable ``loss(model, x0, generator) -> Tensor`` of per-sample values,
shape ``(batch,)``; the :class:`~scoresde.training.Trainer` averages it.

**Class labels.** Called with ``y=labels`` (shape ``(batch,)``), a loss trains a class-conditional
model :math:`s_\theta(x, t \mid y)`: the same objective with the model called as
``model(x_t, t, y=labels)``. With ``label_dropout`` :math:`= p`, each label is replaced by the
model's null class (``model.num_classes``) with probability :math:`p`, drawn from the loss's
generator, so one network learns :math:`\nabla\log p_t(x \mid y)` and, on the dropped rows,
:math:`\nabla\log p_t(x)` -- the pair classifier-free guidance combines (Ho & Salimans 2022).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import (
    ArgumentError,
    check_callable,
    check_choice,
    check_eps,
    check_float_tensor,
    check_int,
    check_positive,
    check_range,
)
from ..sde import SDE, LinearSDEBase, torchsde_integrate
from ..sde.base import expand_to

WEIGHTINGS = ("sigma2", "likelihood")


def drop_labels(model: Callable, y: Tensor, p: float, generator, *, total: int | None = None,
                rows: slice | None = None) -> Tensor:
    """``y`` with each label replaced by the model's null class (``model.num_classes``) with
    probability ``p``; the draws cover ``total`` rows of which ``rows`` are kept (the shards of a
    data-parallel step draw as one process would)."""
    if p == 0:
        return y
    null = getattr(model, "num_classes", None)
    if not isinstance(null, int) or isinstance(null, bool):
        raise ArgumentError(
            f"label_dropout={p} needs a class-conditional model with a null class (model.num_classes, e.g. "
            f"ScoreModel(..., num_classes=K)); got {type(model).__name__} without num_classes"
        )
    n = y.shape[0]
    total = n if total is None else total
    u = torch.rand(total, generator=generator, device=generator.device if generator is not None else y.device)
    drop = (u[rows] if rows is not None else u).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)


def shard_rows(x0: Tensor, shard: tuple[int, int] | None) -> tuple[int, slice]:
    """``(total, rows)`` for a loss's draws: ``x0`` (a non-empty float batch) holds ``rows`` of a
    global batch of ``total`` (``shard=(start, total)``; None: the whole batch)."""
    check_float_tensor("x0", x0)
    if x0.dim() < 1 or x0.shape[0] == 0:
        raise ArgumentError(f"x0 must have a non-empty batch dimension, got shape {tuple(x0.shape)}")
    n = x0.shape[0]
    start, total = (0, n) if shard is None else shard
    if not (0 <= start and start + n <= total):
        raise ArgumentError(f"shard must be (start, total) with 0 <= start and start + {n} <= total, got {shard!r}")
    return total, slice(start, start + n)


def _uniform(n: int, lo: float, hi: float, like: Tensor, generator) -> Tensor:
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return lo + (hi - lo) * u


class DSMLoss:
    r"""Continuous-time denoising score matching for a linear SDE (:class:`~scoresde.LinearSDEBase`).

    Args:
        sde: the linear SDE (VP, sub-VP, VE, DiscreteVPSDE or any ``LinearSDE``).
        weighting: ``"sigma2"`` (:math:`\lambda=\sigma_t^2`) or ``"likelihood"`` (:math:`\lambda=g^2`).
        importance_sampling: for the likelihood weighting, draw t from :math:`q \propto g^2/\sigma^2`
            (uniform in log-SNR) instead of uniformly; ignored for ``"sigma2"``.
        eps: smallest training time (default ``sde.eps``).
        label_dropout: probability of replacing a label by the null class (when called with ``y``).
    """

    def __init__(
        self,
        sde: SDE,
        weighting: str = "sigma2",
        *,
        importance_sampling: bool = True,
        eps: float | None = None,
        label_dropout: float = 0.0,
    ):
        if not isinstance(sde, LinearSDEBase):
            raise ArgumentError(
                f"sde must be a LinearSDEBase (a linear SDE) for denoising score matching (it needs p(x_t | x_0)), got "
                f"{type(sde).__name__}; use SlicedScoreMatchingLoss for SDEs without a closed-form kernel"
            )
        check_choice("weighting", weighting, WEIGHTINGS)
        eps = check_eps(sde.eps if eps is None else eps, sde.T)
        self.sde = sde
        self.weighting = weighting
        self.importance_sampling = bool(importance_sampling) and weighting == "likelihood"
        self.eps = eps
        self.label_dropout = check_range("label_dropout", label_dropout, 0.0, 1.0, low_closed=True)
        ends = sde.log_snr(torch.tensor([eps, sde.T], dtype=torch.float64))
        self._lam_eps, self._lam_T = float(ends[0]), float(ends[1])
        self.config = {
            "loss": "dsm", "weighting": weighting, "importance_sampling": self.importance_sampling, "eps": eps,
        }
        if self.label_dropout:  # recorded only when set: configs of runs without labels stay as they were
            self.config["label_dropout"] = self.label_dropout

    def sample_t(self, n: int, like: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` times and the factors :math:`w` with
        :math:`\\mathcal L \\approx \\tfrac12\\,\\mathrm{mean}\\,w\\,\\|\\sigma_t s_\\theta + n\\|^2`."""
        if self.importance_sampling:
            lam = _uniform(n, self._lam_eps, self._lam_T, like, generator)
            t = self.sde.t_from_log_snr(lam).clamp(self.eps, self.sde.T)
            w = torch.full_like(t, 2.0 * (self._lam_eps - self._lam_T))
            return t, w
        t = _uniform(n, self.eps, self.sde.T, like, generator)
        if self.weighting == "sigma2":
            return t, torch.ones_like(t)
        _, sigma = self.sde.marginal(t)
        # uniform t: the weight is (T - eps) g^2 / sigma^2 so that the mean estimates the integral
        return t, (self.sde.T - self.eps) * self.sde.g(t).square() / sigma.square()

    #: accepts ``shard=`` (see ``__call__``): a data-parallel run draws the global batch's noise
    shardable = True

    def __call__(
        self,
        model: Callable,
        x0: Tensor,
        generator: torch.Generator | None = None,
        *,
        shard: tuple[int, int] | None = None,
        y: Tensor | None = None,
    ) -> Tensor:
        """Per-sample losses of ``x0``, shape ``(batch,)``; ``y``: class labels of shape ``(batch,)``
        for a class-conditional model (see the module doc).

        ``shard=(start, total)``: ``x0`` holds rows ``[start, start + batch)`` of a global batch
        of ``total``; the times and noise are drawn for all ``total`` rows (cheap next to the
        network) and this shard's rows kept, so the shards of a data-parallel step see exactly
        the noise a single process would draw for the whole batch.
        """
        total, rows = shard_rows(x0, shard)
        t, w = self.sample_t(total, x0, generator)
        noise = torch.randn((total, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype)
        t, w, noise = t[rows], w[rows], noise[rows]
        alpha, sigma = (expand_to(v, x0) for v in self.sde.marginal(t))
        xt = alpha * x0 + sigma * noise
        if y is None:
            eps_hat = model.eps(xt, t) if hasattr(model, "eps") else self.sde.to_eps(model(xt, t), xt, t, "score")
        else:  # the dropout draws come after the noise: an unconditional run's stream is untouched
            y = drop_labels(model, y, self.label_dropout, generator, total=total, rows=rows)
            eps_hat = (model.eps(xt, t, y=y) if hasattr(model, "eps")
                       else self.sde.to_eps(model(xt, t, y=y), xt, t, "score"))
        err = (eps_hat - noise).flatten(1).square().sum(1)  # ||sigma s + n||^2 = ||n - eps_hat||^2
        return 0.5 * w * err


class SlicedScoreMatchingLoss:
    r"""Sliced score matching with :math:`x_t` simulated from the forward SDE (any :class:`SDE`).

    For each batch the forward SDE is integrated from :math:`x_0` with torchsde
    (Euler-Maruyama, step ``dt``) through a grid of ``n_times`` times on :math:`[t_{min}, T]`;
    each sample then takes the state at one grid time drawn uniformly, so one simulation serves
    many noise levels. The Brownian path is seeded from ``generator``.

    Args:
        sde: any forward SDE.
        n_times: grid size.
        t_min: smallest time (default ``max(sde.eps, 0.01 T)``: SSM's variance grows as t -> 0).
        dt: Euler-Maruyama step for the simulation.
        n_projections: number of random directions :math:`v` per sample.
        weighting: :math:`\lambda(t)`, a callable ``t -> Tensor`` (default 1).
        label_dropout: probability of replacing a label by the null class (when called with ``y``).
    """

    def __init__(
        self,
        sde: SDE,
        *,
        n_times: int = 32,
        t_min: float | None = None,
        dt: float = 0.01,
        n_projections: int = 1,
        weighting: Callable[[Tensor], Tensor] | None = None,
        label_dropout: float = 0.0,
    ):
        if not isinstance(sde, SDE):
            raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        n_times = check_int("n_times", n_times, 2)
        n_projections = check_int("n_projections", n_projections)
        t_min = check_eps(max(sde.eps, 0.01 * sde.T) if t_min is None else t_min, sde.T, name="t_min")
        dt = check_positive("dt", dt)
        if weighting is not None:
            check_callable("weighting", weighting, "weighting(t) -> (batch,)")
        self.sde, self.n_times, self.t_min, self.dt = sde, n_times, t_min, dt
        self.n_projections = n_projections
        self.weighting = weighting
        self.label_dropout = check_range("label_dropout", label_dropout, 0.0, 1.0, low_closed=True)
        self.config = {"loss": "ssm", "n_times": n_times, "t_min": t_min, "dt": self.dt, "n_projections": n_projections}
        if self.label_dropout:
            self.config["label_dropout"] = self.label_dropout

    def simulate(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``(x_t, t)``: one forward simulation, each sample at a uniformly chosen grid time."""
        n = x0.shape[0]
        grid = torch.linspace(self.t_min, self.sde.T, self.n_times, dtype=x0.dtype, device=x0.device)
        times = torch.cat([grid.new_zeros(1), grid])
        gen_device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
        with torch.no_grad():
            path = torchsde_integrate(self.sde, x0, times, dt=self.dt, seed=seed)
        idx = torch.randint(1, self.n_times + 1, (n,), generator=generator, device=x0.device)
        xt = path[idx, torch.arange(n, device=x0.device)]
        return xt, times[idx]

    def __call__(self, model: Callable, x0: Tensor, generator: torch.Generator | None = None, *,
                 y: Tensor | None = None) -> Tensor:
        check_float_tensor("x0", x0)
        if x0.dim() < 1 or x0.shape[0] == 0:
            raise ArgumentError(f"x0 must have a non-empty batch dimension, got shape {tuple(x0.shape)}")
        xt, t = self.simulate(x0, generator)
        if y is not None:
            y = drop_labels(model, y, self.label_dropout, generator)
        call = model if y is None else (lambda x_, t_: model(x_, t_, y=y))
        total = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        with torch.enable_grad():
            xt = xt.detach().requires_grad_(True)
            s = call(xt, t)
            for _ in range(self.n_projections):
                v = torch.randn(xt.shape, generator=generator, device=xt.device, dtype=xt.dtype)
                (jv,) = torch.autograd.grad((s * v).sum(), xt, create_graph=True)
                total = total + (v * jv).flatten(1).sum(1)
            loss = 0.5 * s.flatten(1).square().sum(1) + total / self.n_projections
        if self.weighting is not None:
            loss = loss * self.weighting(t)
        return loss
