r"""Conditional sampling: inpainting / imputation and guidance, built on an unconditional ``score_fn``.

A ``score_fn`` that closes over a condition needs nothing from here. The helpers below turn
an unconditional score into a conditional one or constrain the sampler's states.

**Inpainting.** Given a ``mask`` (True where the value is known) and ``known`` values :math:`y`,
sample the unknown coordinates from :math:`p(x_u \mid x_k = y)`.

* ``"replacement"`` (Song et al. 2021, App. I.2): after every step to time :math:`t`, overwrite the
  known coordinates with a fresh draw of :math:`\alpha_t y + \sigma_t z`. One score evaluation
  per step, any sampler that steps on a grid; an approximation (it conditions the unknown
  coordinates on a noisy :math:`y`, which is not exact even for Gaussian data).
* ``"tweedie"`` (moment-matched posterior, as in Boys et al. 2023): sample with the conditional
  score :math:`\nabla\log p_t(x) + \nabla\log p(x_{0,k} = y \mid x_t)`, where
  :math:`p(x_0 \mid x_t)` is taken Gaussian with Tweedie's mean :math:`m = (x + \sigma_t^2 s)/\alpha_t`
  and covariance :math:`C = \frac{\sigma_t^2}{\alpha_t}\frac{\partial m}{\partial x}`:

  .. math:: \nabla_x \log p(y \mid x_t) \approx \Big(\frac{\partial m_k}{\partial x}\Big)^{\!\top} C_{kk}^{-1}(y - m_k).

  Exact when the data are Gaussian; costs one score evaluation with one vector-Jacobian product
  per known coordinate (so for low-dimensional problems or few known values), needs a
  differentiable ``score_fn``, and works with every sampler.

**Guidance.** One convention everywhere: the guidance weight :math:`w` multiplies the
conditioning term, so :math:`w = 0` is the unconditional model, :math:`w = 1` the conditional
one and :math:`w > 1` sharper conditioning.

* :func:`classifier_guidance` (Dhariwal & Nichol 2021): :math:`s(x,t) + w\,\nabla_x\log p_t(y\mid x)`,
  with a time-dependent classifier :math:`p_t(y \mid x_t)` (e.g.
  :class:`~scoresde.training.NoisyClassifier`, trained on noised data).
* :func:`classifier_free_guidance` (Ho & Salimans 2022): :math:`s_u + w\,(s_c - s_u)` from two
  score functions; :func:`conditional_score` the same from one class-conditional
  ``score_fn(x, t, y=labels)`` (what ``sample(..., cond=labels, guidance=w)`` uses).

Since :math:`\nabla\log p_t(x\mid y) = \nabla\log p_t(x) + \nabla\log p_t(y\mid x)`, both at
:math:`w = 1` with exact ingredients give the exact conditional :math:`p_0(x \mid y)`. For
:math:`w \ne 1` the guided score is that of :math:`p_t(x)\,p_t(y\mid x)^w`, a family that is not
the diffusion of one distribution: the samples are sharper than :math:`p_0(x \mid y)` but are not
exactly :math:`p_0(x)\,p_0(y \mid x)^w / Z`.

**Composition** ("mixing scores"). Several conditions at once: with labels
:math:`y_1, \dots, y_m` per sample,

.. math:: s(x, t) + w \sum_j \big(s(x, t \mid y_j) - s(x, t)\big)
   = \nabla\log\Big[p_t(x) \prod_j \Big(\frac{p_t(x\mid y_j)}{p_t(x)}\Big)^{w}\Big],

and for :math:`w = 1` the target is :math:`p_0(x \mid y_1, \dots, y_m)` exactly when the
conditions are independent given :math:`x_t` at every noise level,
:math:`p_t(y_1,\dots,y_m\mid x) = \prod_j p_t(y_j\mid x)` -- e.g. conditions on independent
groups of coordinates. Conditions independent given the clean :math:`x_0` only are not enough:
noise couples them, and the composed sampler is then an approximation.
:func:`compose_scores` forms :math:`\sum_i w_i s_i` (a product of models
:math:`\prod_i p_i^{w_i}`; exact at :math:`t = 0` only, for the same reason: the diffusion of a
product is not the product of the diffusions) or, with a ``base``,
:math:`s_b + \sum_i w_i (s_i - s_b)`.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError, check_callable, check_choice, check_labels, check_real
from ..models.embeddings import check_guidance_weight
from ..sde import SDE, LinearSDEBase, ScoreFn
from .base import per_sample

INPAINT_METHODS = ("replacement", "tweedie")


def classifier_guidance(score_fn: ScoreFn, log_likelihood: Callable[[Tensor, Tensor], Tensor],
                        scale: float = 1.0) -> ScoreFn:
    r"""The guided score :math:`s(x,t) + w\,\nabla_x \log p_t(y \mid x)` (Dhariwal & Nichol 2021).

    ``log_likelihood(x, t)`` returns :math:`\log p_t(y\mid x)` per sample, shape ``(batch,)``,
    differentiable in ``x``. With ``scale=1`` and the exact :math:`p_t(y\mid x)` the result is the
    exact score of the posterior :math:`p_t(x \mid y)`.
    """
    check_callable("score_fn", score_fn, "score_fn(x, t)")
    check_callable("log_likelihood", log_likelihood, "log_likelihood(x, t) -> (batch,)")
    w = check_real("scale", scale)

    def guided_score(x: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():  # also under the samplers' no_grad
            xg = x.detach().requires_grad_(True)
            ll = log_likelihood(xg, t)
            if not isinstance(ll, Tensor) or ll.shape != (x.shape[0],):
                got = tuple(ll.shape) if isinstance(ll, Tensor) else type(ll).__name__
                raise ArgumentError(f"log_likelihood must return a tensor of shape ({x.shape[0]},), got {got}")
            if not ll.requires_grad:
                raise ArgumentError(
                    "log_likelihood must be differentiable in x (its output does not depend on x through "
                    "autograd: detached, under torch.no_grad(), or computed outside torch)"
                )
            (grad,) = torch.autograd.grad(ll.sum(), xg)
        return score_fn(x, t) + w * grad

    return guided_score


def classifier_free_guidance(cond_score_fn: ScoreFn, uncond_score_fn: ScoreFn, scale: float = 1.0) -> ScoreFn:
    r"""Classifier-free guidance (Ho & Salimans 2022): :math:`s_u + w\,(s_c - s_u)`.

    ``scale=1`` gives the conditional score, 0 the unconditional one, above 1 sharper conditioning.
    Each call evaluates both score functions (the sampler's ``nfe`` counts it once).
    """
    check_callable("cond_score_fn", cond_score_fn, "cond_score_fn(x, t)")
    check_callable("uncond_score_fn", uncond_score_fn, "uncond_score_fn(x, t)")
    w = check_real("scale", scale)

    def cfg_score(x: Tensor, t: Tensor) -> Tensor:
        s_u = uncond_score_fn(x, t)
        return s_u + w * (cond_score_fn(x, t) - s_u)

    return cfg_score


def _takes_labels(score_fn) -> bool | None:
    """Whether ``score_fn`` can be called as ``score_fn(x, t, y=...)`` (None: cannot tell)."""
    try:
        params = inspect.signature(score_fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return any(p.name == "y" or p.kind is p.VAR_KEYWORD for p in params)


def check_cond(score_fn, cond, guidance, batch: int) -> tuple[Tensor | None, float]:
    """``sample``'s ``cond=`` and ``guidance=``, checked: the labels as int64 of shape ``(batch,)`` or
    ``(batch, m)`` (an integer is every sample's label) and the weight (default 1)."""
    if cond is None:
        if guidance is not None:
            raise ArgumentError(
                "guidance needs cond=: the class labels to guide towards (guidance weighs a class-conditional "
                "model's conditional score against its unconditional one)"
            )
        return None, 1.0
    w = 1.0 if guidance is None else check_real("guidance", guidance)
    k = getattr(score_fn, "num_classes", "absent")
    if k is None:
        raise ArgumentError(
            f"cond: score_fn ({type(score_fn).__name__}) is an unconditional model (num_classes=None); cond= and "
            f"guidance= need a class-conditional one, e.g. ScoreModel(UNet(..., num_classes=K), sde)"
        )
    if k == "absent" and _takes_labels(score_fn) is False:
        raise ArgumentError(
            f"cond: score_fn must take class labels as score_fn(x, t, y=labels); {getattr(score_fn, '__name__', type(score_fn).__name__)} "
            f"has no argument y"
        )
    if isinstance(cond, numbers.Integral) and not isinstance(cond, bool):
        cond = torch.full((batch,), int(cond), dtype=torch.long)
    elif isinstance(cond, Sequence) and not isinstance(cond, (str, bytes)):
        try:
            cond = torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentError(f"cond must be class labels (integers), got {cond!r:.80}") from None
    if isinstance(cond, Tensor) and cond.dim() == 0:
        cond = cond.expand(batch)
    if not isinstance(cond, Tensor) or cond.dim() not in (1, 2) or cond.shape[0] != batch:
        got = tuple(cond.shape) if isinstance(cond, Tensor) else repr(cond)
        raise ArgumentError(
            f"cond must be a class label, or labels of shape ({batch},) (one per sample) or ({batch}, m) "
            f"(m conditions composed), got {got}"
        )
    num = k if isinstance(k, int) and not isinstance(k, bool) else 2**62  # unknown K: labels >= 0 at least
    for j in range(cond.shape[1] if cond.dim() == 2 else 1):
        check_labels("cond", cond[:, j] if cond.dim() == 2 else cond, num, batch=batch)
    return cond.long(), w


def conditional_score(score_fn: Callable[..., Tensor], labels: Tensor, guidance: float = 1.0) -> ScoreFn:
    r"""The guided score of a class-conditional ``score_fn(x, t, y=labels)`` (classifier-free guidance).

    For labels of shape ``(batch,)``:
    :math:`s_w = s(x, t) + w\,\big(s(x, t \mid y) - s(x, t)\big)`, with :math:`s(x, t)` =
    ``score_fn(x, t)`` the unconditional score; ``guidance`` :math:`w = 1` is the conditional
    score (one evaluation), 0 the unconditional one (one evaluation), anything else costs two.
    A model that takes the weight as an input (``guidance_range``, a guidance-distilled
    student) is called once, as ``score_fn(x, t, y=labels, guidance=w)``.
    For labels of shape ``(batch, m)`` the ``m`` conditions are composed,
    :math:`s + w \sum_j (s(\cdot \mid y_j) - s)` (``m + 1`` evaluations; see the module doc for when
    that is exact).
    """
    check_callable("score_fn", score_fn, "score_fn(x, t, y=labels)")
    w = check_real("guidance", guidance)
    cols = [labels] if labels.dim() == 1 else list(labels.unbind(1))
    rng = getattr(score_fn, "guidance_range", None)
    if rng is not None:  # a guidance-distilled student: the weight is its input, one evaluation
        if len(cols) != 1:
            raise ArgumentError(f"cond: a model that takes the guidance weight as an input serves one label per "
                                f"sample, got labels of shape {tuple(labels.shape)}")
        check_guidance_weight(w, rng)

        def student_score(x: Tensor, t: Tensor) -> Tensor:
            return score_fn(x, t, y=labels, guidance=w)
        return student_score
    if len(cols) == 1 and w == 1.0:
        def cond_score(x: Tensor, t: Tensor) -> Tensor:
            return score_fn(x, t, y=labels)
        return cond_score
    if w == 0.0:
        def uncond_score(x: Tensor, t: Tensor) -> Tensor:
            return score_fn(x, t)
        return uncond_score

    def guided_score(x: Tensor, t: Tensor) -> Tensor:
        s_u = score_fn(x, t)
        return s_u + w * sum(score_fn(x, t, y=y) - s_u for y in cols)

    return guided_score


def compose_scores(score_fns: Sequence[ScoreFn], weights: Sequence[float] | None = None, *,
                   base: ScoreFn | None = None) -> ScoreFn:
    r"""Score composition: :math:`\sum_i w_i s_i` (the product of models :math:`\prod_i p_i^{w_i}`)
    or, with ``base`` :math:`s_b`, :math:`s_b + \sum_i w_i (s_i - s_b)`.

    ``weights`` default to 1 each. Exact only where the module doc says; each call evaluates every
    score function once.
    """
    if isinstance(score_fns, (str, bytes)) or not isinstance(score_fns, Sequence) or not score_fns:
        raise ArgumentError(f"score_fns must be a non-empty sequence of score functions, got {score_fns!r:.80}")
    for i, fn in enumerate(score_fns):
        check_callable(f"score_fns[{i}]", fn, "score_fn(x, t)")
    if base is not None:
        check_callable("base", base, "base(x, t)")
    if weights is None:
        ws = [1.0] * len(score_fns)
    else:
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(score_fns):
            raise ArgumentError(f"weights must be {len(score_fns)} numbers (one per score function), got {weights!r:.80}")
        ws = [check_real(f"weights[{i}]", v) for i, v in enumerate(weights)]

    def composed_score(x: Tensor, t: Tensor) -> Tensor:
        if base is None:
            return sum(w * fn(x, t) for w, fn in zip(ws, score_fns, strict=True))
        s_b = base(x, t)
        return s_b + sum(w * (fn(x, t) - s_b) for w, fn in zip(ws, score_fns, strict=True))

    return composed_score


class Inpainting:
    """Holds a mask and known values for :func:`scoresde.sample` (``mask=``, ``known=``, ``inpaint=``)."""

    def __init__(self, sde: SDE, shape: tuple[int, ...], mask: Tensor, known: Tensor, method: str,
                 dtype: torch.dtype, device):
        check_choice("inpaint", method, INPAINT_METHODS)
        if not isinstance(sde, LinearSDEBase):
            raise ArgumentError(f"inpainting needs a LinearSDE (LinearSDEBase; it noises the known values), got {type(sde).__name__}")
        try:
            mask = torch.as_tensor(mask, device=device)
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentError(f"mask must be a boolean tensor (True = known), got {mask!r}") from None
        if mask.dtype != torch.bool:
            raise ArgumentError(f"mask must be a boolean tensor (True = known), got dtype {mask.dtype}")
        try:
            known = torch.as_tensor(known, device=device)
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentError(f"known must be a tensor of numbers (the known values), got {known!r}") from None
        if known.dtype == torch.bool or known.is_complex():
            raise ArgumentError(f"known must be a real-valued tensor, got dtype {known.dtype}")
        try:
            mask = torch.broadcast_to(mask, shape)
            known = torch.broadcast_to(known.to(dtype), shape)
        except RuntimeError:
            raise ArgumentError(
                f"mask and known must broadcast to the sample shape {shape}, got mask {tuple(mask.shape)} "
                f"and known {tuple(known.shape)}"
            ) from None
        # read once, before sampling
        if not bool(mask.any()):
            raise ArgumentError("mask marks no value as known (all False): nothing to condition on")
        if not bool(torch.isfinite(known[mask]).all()):
            raise ArgumentError("known must be finite where mask is True, got NaN or inf")
        self.sde, self.method = sde, method
        self.mask, self.known = mask, known
        if method == "tweedie":
            flat = mask.reshape(shape[0], -1)
            n_known = flat.sum(1)
            if not bool((n_known == n_known[0]).all()):
                raise ArgumentError("inpaint='tweedie' needs the same number of known values in every sample")
            self._idx = flat.nonzero()[:, 1].reshape(shape[0], -1)  # (batch, d_k), once before sampling
            self._y = known.reshape(shape[0], -1).gather(1, self._idx)

    def project(self, noise) -> Callable[[Tensor, Tensor], Tensor]:
        """The replacement step, applied by the context after every step."""

        def replace(x: Tensor, t: Tensor) -> Tensor:
            a, s = self.sde.marginal(t)
            noisy = per_sample(a, x) * self.known + per_sample(s, x) * noise(x)
            return torch.where(self.mask, noisy, x)

        return replace

    def finish(self, x: Tensor) -> Tensor:
        """Put the known values in place at the end."""
        return torch.where(self.mask, self.known, x)

    def conditional_score(self, score_fn: ScoreFn) -> ScoreFn:
        """The ``"tweedie"`` conditional score (see the module doc)."""
        sde, idx, y = self.sde, self._idx, self._y

        def tweedie_conditional_score(x: Tensor, t: Tensor) -> Tensor:
            b = x.shape[0]
            a, s = sde.marginal(t)
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                score = score_fn(xg, t)
                m = sde.to_x0(score, xg, t, "score")  # Tweedie's mean E[x_0 | x_t]
                m_k = m.reshape(b, -1).gather(1, idx)  # (batch, d_k)
                d_k = m_k.shape[1]
                basis = torch.eye(d_k, dtype=x.dtype, device=x.device)[:, None, :].expand(d_k, b, d_k)
                (jac,) = torch.autograd.grad(m_k, xg, grad_outputs=basis, is_grads_batched=True)
            jac = jac.reshape(d_k, b, -1).transpose(0, 1)  # (batch, d_k, D): d m_k / d x
            cov = (s.square() / a).reshape(b, 1, 1) * jac.gather(2, idx[:, None, :].expand(b, d_k, d_k))
            cov = 0.5 * (cov + cov.transpose(1, 2))
            r = torch.linalg.solve(cov, (y - m_k.detach()).unsqueeze(-1))  # (batch, d_k, 1)
            grad = (jac.transpose(1, 2) @ r).reshape(x.shape)
            return score.detach() + grad

        return tweedie_conditional_score
