r"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"): a multistep exponential integrator of the probability-flow ODE of a linear
SDE (the predictor UniP) with a corrector (UniC) that costs no extra evaluation.

In the log-SNR :math:`\lambda = \log(\alpha/\sigma)`, from :math:`s = t_i` to :math:`t = t_{i+1}`,
:math:`h = \lambda_t - \lambda_s > 0`, with the model's data prediction :math:`m = \hat x_0`
(``prediction="data"``, :math:`\hat h = -h`) the step is

.. math:: x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\,(e^{\hat h}-1)\,m_s
          - \alpha_t B(h)\sum_{k=1}^{p-1}\rho_k D_k,\qquad
          D_k = \frac{m_{s_k} - m_s}{r_k},\quad r_k = \frac{\lambda_{s_k}-\lambda_s}{h},

where :math:`s_k = t_{i-k}` are the previous grid points (:math:`r_k < 0`). With the noise
prediction :math:`m = \hat\epsilon` (``prediction="noise"``, :math:`\hat h = h`) it is
:math:`x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^{\hat h}-1)m_s - \sigma_t B(h)\sum_k\rho_k D_k`.

The weights solve the order conditions :math:`\sum_k \rho_k r_k^{j-1} = j!\,\hat h\,\varphi_{j+1}(\hat h)/B(h)`,
:math:`j = 1, \dots, p-1`, with :math:`\varphi_{j}(z) = \sum_{n \ge 0} z^n/(n+j)!`
(:math:`\varphi_1(z) = (e^z-1)/z`), and :math:`B(h) = \hat h` (``variant="bh1"``) or
:math:`e^{\hat h}-1` (``"bh2"``). For :math:`p = 2` the one weight is :math:`\rho_1 = \tfrac12`, equal to the
solution up to :math:`O(h)`, which keeps order 2 (the paper's and diffusers' choice).

**UniC.** Once the model is evaluated at the predicted :math:`\tilde x_t`, that evaluation
:math:`m_t` also corrects it: the same formula from :math:`s` with one more point
:math:`r_p = 1`, :math:`D_p = m_t - m_s`, and the :math:`p` weights of the full square system
(:math:`p = 1`: :math:`\rho_1 = \tfrac12`). The corrected :math:`x_t^c` replaces :math:`\tilde x_t` as the
start of the next step, while :math:`m_t` (taken at :math:`\tilde x_t`) is kept as the model value
at :math:`t`: no extra evaluation. UniP-p has order p; UniC-p raises it to p + 1.

**The steps.** Step ``i`` evaluates the model at :math:`x_i`, corrects :math:`x_i` with it (``i >= 1``,
UniC of the order of the previous predictor), then predicts :math:`x_{i+1}` with order
:math:`\min(p, i + 1)` (the warm start) and, with ``lower_order_final``, at most :math:`N - i`
(diffusers' rule: orders ..., 3, 2, 1 on the last steps). **The final step** is a predictor
only: no evaluation follows it inside the sampler (the driver's denoising evaluation at
:math:`\varepsilon` is not used to correct), exactly as diffusers' ``UniPCMultistepScheduler``.
Every coefficient is computed once, in float64 on the host, from the grid.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from ..errors import check_bool, check_choice, check_int
from ..sde import SDE
from .base import FEW_STEP_END_LEVEL, LINEAR, MARGINALS, Sampler
from .coefficients import combine, phi
from .registry import register

_PREDICTIONS = ("data", "noise")
_VARIANTS = ("bh1", "bh2")


def _solve(rows: list[list[float]], rhs: list[float]) -> list[float]:
    """The solution of a small dense linear system (float64, on the host; numpy, as a 2x2 or
    3x3 solve through torch costs ~35 us of set-up per step of the grid)."""
    return np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64)).tolist()


@register
class UniPC(Sampler):
    r"""UniPC: UniP-p predictor with the UniC-p corrector (multistep, one evaluation per step), for linear SDEs.

    Args:
        order: ``p``, the predictor's order, 1-3 (diffusers' ``solver_order``; default 2).
        variant: :math:`B(h)`, ``"bh2"`` (:math:`e^{\hat h}-1`, default) or ``"bh1"`` (:math:`\hat h`).
        prediction: ``"data"`` (default; diffusers' ``predict_x0=True``) or ``"noise"``.
        corrector: apply UniC (default True); False is UniP alone.
        lower_order_final: lower the order on the last steps to :math:`\min(p, N - i)` (default,
            as diffusers); False keeps order ``p`` after the warm start.

    Order ``p + 1`` with the corrector, ``p`` without (lower on the warm-start and, with
    ``lower_order_final``, the last steps). NFE = steps. Default grid: uniform in log-SNR.
    """

    name = "unipc"
    requires = (LINEAR, MARGINALS)
    default_steps = 10
    default_grid = "log_snr"
    default_end_level = FEW_STEP_END_LEVEL

    def __init__(self, order: int = 2, variant: str = "bh2", prediction: str = "data", corrector: bool = True,
                 lower_order_final: bool = True):
        self.p = check_int("order", order, 1, 3)
        self.variant = check_choice("variant", variant, _VARIANTS)
        self.prediction = check_choice("prediction", prediction, _PREDICTIONS)
        self.corrector = check_bool("corrector", corrector)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)

    def options(self) -> dict:
        return dict(order=self.p, variant=self.variant, prediction=self.prediction, corrector=self.corrector,
                    lower_order_final=self.lower_order_final)

    def order(self, sde: SDE) -> float:
        return float(self.p + 1 if self.corrector else self.p)

    # ---- coefficients, on the host -------------------------------------------------------------
    def step_orders(self, n: int) -> list[int]:
        """The predictor order of each of ``n`` steps: warm start, then ``p`` (lowered at the end)."""
        return [min(self.p, i + 1, n - i if self.lower_order_final else self.p) for i in range(n)]

    def _weights(self, a, s, lam, i: int, q: int, corrector: bool) -> tuple[float, list[float]]:
        r"""The update from :math:`t_i` to :math:`t_{i+1}` as :math:`c\,x_i + \sum_j w_j m_j`: returns
        ``c`` and ``w`` for the model values at :math:`t_i, t_{i-1}, \dots, t_{i-q+1}` and, for the
        corrector, :math:`t_{i+1}` last."""
        data = self.prediction == "data"
        h = lam[i + 1] - lam[i]
        hh = -h if data else h
        lead = a[i + 1] if data else s[i + 1]  # alpha_t (data) or sigma_t (noise)
        c = s[i + 1] / s[i] if data else a[i + 1] / a[i]
        b_h = hh if self.variant == "bh1" else math.expm1(hh)
        rs = [(lam[i - k] - lam[i]) / h for k in range(1, q)] + ([1.0] if corrector else [])
        m = len(rs)  # number of differences D_k
        rhs = [math.factorial(j) * hh * phi(j + 1, hh) / b_h for j in range(1, m + 1)]
        if m == 0:
            rho = []
        elif m == 1 and (corrector or q == 2):
            rho = [0.5]
        else:
            rho = _solve([[r ** (j - 1) for r in rs] for j in range(1, m + 1)], rhs)
        w0 = -lead * math.expm1(hh)
        w = [0.0] * m
        for k, (rk, pk) in enumerate(zip(rs, rho, strict=True)):  # -lead B rho_k (m_k - m_s) / r_k
            w[k] = -lead * b_h * pk / rk
            w0 -= w[k]
        return c, [w0] + w

    def init(self, ctx, x):
        a, s, lam = ctx.host_marginals
        n = ctx.n_steps
        orders = self.step_orders(n)
        pred = [self._weights(a, s, lam, i, orders[i], False) for i in range(n)]
        corr = [None] + [self._weights(a, s, lam, i - 1, orders[i - 1], True) for i in range(1, n)]
        return pred, corr, orders, [], None  # coefficients, orders, model history (newest first), x_{i-1}

    def step(self, ctx, i: int, x: Tensor, state):
        pred, corr, orders, hist, x_prev = state
        m_i = ctx.predict(x, i, "x0" if self.prediction == "data" else "eps")
        if self.corrector and i > 0:  # UniC: correct x_i from x_{i-1} with the evaluation just made
            c, w = corr[i]
            x = combine(c, x_prev, w, hist[: len(w) - 1] + [m_i])
        hist = ([m_i] + hist)[: self.p]
        c, w = pred[i]
        return combine(c, x, w, hist[: orders[i]]), (pred, corr, orders, hist, x)
