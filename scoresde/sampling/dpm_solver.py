r"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2023): exponential integrators of the
probability-flow ODE of a linear SDE, in the log-SNR :math:`\lambda_t = \log(\alpha_t/\sigma_t)`.

The linear part of the ODE is integrated exactly; only the model's prediction is expanded in
:math:`\tau = \lambda - \lambda_s`. From :math:`s` to :math:`t` with :math:`h = \lambda_t - \lambda_s > 0`:

* noise prediction :math:`\hat\epsilon = -\sigma_t s_\theta` (DPM-Solver):
  :math:`x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t\sum_k \varphi_k(h)\,\hat\epsilon^{(k)}_s`,
  :math:`\varphi_k(h) = \int_0^h e^{h-\tau}\tfrac{\tau^k}{k!}d\tau`
  (:math:`\varphi_0 = e^h-1`, :math:`\varphi_1 = e^h-1-h`, :math:`\varphi_2 = e^h-1-h-h^2/2`);
* data prediction :math:`\hat x_0 = (x + \sigma_t^2 s_\theta)/\alpha_t` (DPM-Solver++):
  :math:`x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t\sum_k \psi_k(h)\,\hat x_0^{(k)}{}_s`,
  :math:`\psi_k(h) = \int_0^h e^{\tau-h}\tfrac{\tau^k}{k!}d\tau`
  (:math:`\psi_0 = 1-e^{-h}`, :math:`\psi_1 = h-1+e^{-h}`, :math:`\psi_2 = h^2/2-h+1-e^{-h}`),

where :math:`m^{(k)}` is the k-th :math:`\lambda`-derivative of the prediction. Order 1 keeps
:math:`k=0` (this is DDIM). Higher orders estimate the derivatives by differences:

* singlestep: from extra evaluations inside the step at :math:`\lambda_s + r h`
  (order 2: :math:`r=\tfrac12`; order 3: :math:`r_1=\tfrac13, r_2=\tfrac23`, where
  :math:`\varphi_1 (m_{r_2}-m_s)/(r_2 h)` also covers the :math:`\varphi_2` term to :math:`O(h^4)`);
* multistep: from the predictions at previous grid points (one evaluation per step),
  starting with lower orders.

**Where the multistep order is lowered.** A multistep step of order :math:`q` extrapolates the
prediction's derivatives, estimated over the previous steps, across its own step :math:`h`,
with weights that grow like :math:`h^q` (:math:`\psi_1 \approx h - 1`, :math:`\psi_2 \approx h^2/2`
for large :math:`h`); the prediction itself saturates (:math:`\hat x_0 \to x/\alpha` as the noise
vanishes), so a long step extrapolates a trend that is not there. See :meth:`DPMSolver.step_order`
for the rule and its measurements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import check_bool, check_choice, check_int
from ..sde import SDE
from .base import FEW_STEP_END_LEVEL, LINEAR, MARGINALS, Sampler, batch_time
from .registry import register

_PREDICTIONS = ("data", "noise")
_METHODS = ("multistep", "singlestep")


def _phis(h: Tensor, data: bool) -> tuple[Tensor, Tensor, Tensor]:
    """:math:`(\\psi_0, \\psi_1, \\psi_2)` (data) or :math:`(\\varphi_0, \\varphi_1, \\varphi_2)` (noise) at ``h``."""
    if data:
        p0 = -torch.expm1(-h)
        p1 = h + torch.expm1(-h)
        p2 = 0.5 * h.square() - h - torch.expm1(-h)
    else:
        p0 = torch.expm1(h)
        p1 = torch.expm1(h) - h
        p2 = torch.expm1(h) - h - 0.5 * h.square()
    return p0, p1, p2


@register
class DPMSolver(Sampler):
    r"""DPM-Solver / DPM-Solver++ of order 1-3, single- or multistep, for linear SDEs.

    Args:
        order: 1 (DDIM), 2 or 3.
        method: ``"multistep"`` (one evaluation per step; default) or ``"singlestep"``
            (``order`` evaluations per step).
        prediction: ``"data"`` (DPM-Solver++, default) or ``"noise"`` (DPM-Solver).
        lower_order_final: lower the multistep order where the extrapolation would be unstable
            (:meth:`step_order`; default). False keeps the full order on every step after the
            first ones (diffusers' ``lower_order_final=False``, for exact comparisons).
        solver_type: the second-order multistep term, ``"taylor"`` (default: :math:`\psi_1(h)\,m'`,
            the expansion above; diffusers' ``solver_type="heun"``) or ``"midpoint"``
            (:math:`\tfrac12 h\,\psi_0(h)\,m'`, the 2M form of Lu et al. 2023 and diffusers' default;
            equal to second order, they differ by :math:`O(h^3)` per step).

    The default grid is uniform in log-SNR (``grid="log_snr"``). NFE = steps (multistep) or
    ``order`` x steps (singlestep).
    """

    name = "dpm_solver"
    #: the longest step, relative to the one before it, that a multistep step extrapolates across
    MAX_STEP_RATIO = 2.0
    requires = (LINEAR, MARGINALS)
    default_steps = 20
    default_grid = "log_snr"
    default_end_level = FEW_STEP_END_LEVEL

    def __init__(self, order: int = 2, method: str = "multistep", prediction: str = "data",
                 lower_order_final: bool = True, solver_type: str = "taylor"):
        self.k = check_int("order", order, 1, 3)
        self.method = check_choice("method", method, _METHODS)
        self.prediction = check_choice("prediction", prediction, _PREDICTIONS)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.solver_type = check_choice("solver_type", solver_type, ("taylor", "midpoint"))

    @property
    def _kind(self) -> str:
        """The prediction as :meth:`~scoresde.sampling.context.Context.predict` names it."""
        return "x0" if self.prediction == "data" else "eps"

    def options(self) -> dict:
        return dict(order=self.k, method=self.method, prediction=self.prediction,
                    lower_order_final=self.lower_order_final, solver_type=self.solver_type)

    def order(self, sde: SDE) -> float:
        return float(self.k)

    def evaluations(self, steps: int, sde: SDE) -> int:
        return steps * (self.k if self.method == "singlestep" else 1)

    # ---- pieces ----------------------------------------------------------------------------
    def _model(self, ctx, x: Tensor, t: Tensor, marginal: tuple[Tensor, Tensor]) -> Tensor:
        """The prediction the expansion is made in, :math:`\\hat x_0` or :math:`\\hat\\epsilon`, at a
        time off the grid (singlestep's inner points) with its marginals."""
        convert = ctx.sde.to_x0 if self.prediction == "data" else ctx.sde.to_eps
        return convert(ctx.score(x, batch_time(t, x)), x, t, "score", marginal=marginal)

    def _propagate(self, x: Tensor, a_s, s_s, a_t, s_t, h: Tensor, derivs: list[Tensor],
                   midpoint: bool = False) -> Tensor:
        """:math:`x_t` from :math:`x_s` given the prediction and its derivatives at :math:`s`
        (``midpoint``: a first derivative alone weighted by h psi_0 / 2 instead of psi_1)."""
        data = self.prediction == "data"
        phis = _phis(h, data)
        if midpoint and len(derivs) == 2:
            phis = (phis[0], 0.5 * h * phis[0])
        acc = sum(p * d for p, d in zip(phis, derivs, strict=False))
        if data:
            return (s_t / s_s) * x + a_t * acc
        return (a_t / a_s) * x - s_t * acc

    # ---- steps -------------------------------------------------------------------------------
    def init(self, ctx, x):
        if self.method == "singlestep":
            return None
        # every step's order and coefficients, once, on the host in float64 (no sync in a step)
        t = torch.tensor(ctx.times_host, dtype=torch.float64)
        alphas, sigmas = ctx.sde.marginal(t)
        lams = alphas.log() - sigmas.log()
        orders = self.step_orders(lams)
        coefs = torch.stack([self.multistep_coefficients(i, q, alphas, sigmas, lams) for i, q in enumerate(orders)])
        return orders, coefs.to(dtype=ctx.times.dtype, device=ctx.times.device), []

    def multistep_coefficients(self, i: int, q: int, alphas: Tensor, sigmas: Tensor, lams: Tensor) -> Tensor:
        r"""Step ``i`` of order ``q`` as a linear map: :math:`(c_x, w_0, w_1, w_2)` with
        :math:`x_{i+1} = c_x x_i + \sum_j w_j m_{i-j}`, :math:`m_{i-j}` the prediction at
        :math:`t_{i-j}`. Obtained by running :meth:`_propagate` on basis vectors (index 0 the state,
        1-3 the predictions), so it is the expansion above exactly."""
        e = torch.eye(4, dtype=lams.dtype)
        m0, m1, m2 = e[1], e[2], e[3]
        if q == 1:
            derivs = [m0]
        elif q == 2:
            derivs = [m0, (m0 - m1) / (lams[i] - lams[i - 1])]
        else:  # the quadratic through the last three predictions, differentiated at lambda_s
            h0, h1 = lams[i] - lams[i - 1], lams[i - 1] - lams[i - 2]
            d0, d1 = (m0 - m1) / h0, (m1 - m2) / h1
            c = (d0 - d1) / (h0 + h1)
            derivs = [m0, d0 + c * h0, 2 * c]
        return self._propagate(e[0], alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1], lams[i + 1] - lams[i],
                               derivs, midpoint=self.solver_type == "midpoint")

    def step_orders(self, lams: Tensor) -> list[int]:
        """The order of each multistep step on the grid with log-SNRs ``lams`` (see :meth:`step_order`)."""
        h = (lams[1:] - lams[:-1]).tolist()
        return [self.step_order(i, h) for i in range(len(h))]

    def step_order(self, i: int, h: list[float]) -> int:
        r"""The order of multistep step ``i`` given the steps' sizes ``h`` in log-SNR.

        At most ``order``, and at most ``i + 1`` (the history available). With
        ``lower_order_final`` two rules lower it further:

        * **step ratio:** an order-:math:`q` step extrapolates differences taken over the
          previous :math:`q - 1` steps across its own; when a step is more than
          :attr:`MAX_STEP_RATIO` times longer than the one before it (the last steps of a grid
          uniform in t on VP, where one step spans about 5 log-SNR units), that extrapolation is
          what blows up (measured: order 3 on the 2-D grid mixture, dispersion error 154 at 20
          evaluations), so the order drops until every difference it uses spans a step at most
          that much shorter;
        * **final steps** (Lu et al. 2022, below 15 steps): step ``i`` has order at most
          ``N - i``, so the last step is first order.
        """
        q = min(self.k, i + 1)
        if not self.lower_order_final:
            return q
        while q > 1 and any(h[i - j] > self.MAX_STEP_RATIO * h[i - j - 1] for j in range(q - 1)):
            q -= 1
        n = len(h)
        if n < 15:
            q = min(q, n - i)
        return q

    def step(self, ctx, i: int, x: Tensor, state):
        if self.method == "singlestep":
            return self._singlestep(ctx, i, x), None
        orders, coefs, hist = state
        hist = [ctx.predict(x, i, self._kind)] + hist[:2]  # newest first
        c = coefs[i]
        out = x * c[0]
        for j in range(orders[i]):
            out.addcmul_(hist[j], c[1 + j])
        return out, (orders, coefs, hist)

    def _singlestep(self, ctx, i: int, x: Tensor) -> Tensor:
        r"""One singlestep step: extra evaluations inside it at :math:`\lambda_s + r h`."""
        sde, times = ctx.sde, ctx.times
        alphas, sigmas = ctx.marginals
        lams = ctx.log_snr
        a_s, s_s, a_t, s_t = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        h = lams[i + 1] - lams[i]
        m0 = ctx.predict(x, i, self._kind)
        m_last, r_last = None, None
        for j, r in enumerate({1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}[self.k]):
            t_r = sde.t_from_log_snr(lams[i] + r * h).clamp(times[i + 1], times[i])
            a_r, s_r = sde.marginal(t_r)
            derivs = [m0] if j == 0 else [m0, (m_last - m0) / (r_last * h)]
            u = self._propagate(x, a_s, s_s, a_r, s_r, r * h, derivs)
            m_last, r_last = self._model(ctx, u, t_r, (a_r, s_r)), r
        derivs = [m0] if self.k == 1 else [m0, (m_last - m0) / (r_last * h)]
        return self._propagate(x, a_s, s_s, a_t, s_t, h, derivs)
