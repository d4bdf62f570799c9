r"""The scaled frame of a linear SDE: the likelihood's ODE in EDM's variables
(:class:`ScaledFrameSDE`, ``log_likelihood(..., frame="scaled")``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentError, check_choice
from ..sde import LinearSDEBase, ScoreFn, call_score
from ..sde.base import expand_to

#: the variables the likelihood's ODE can be solved in
FRAMES = ("data", "scaled")


class ScaledFrameSDE(LinearSDEBase):
    r"""The drift-free SDE of the scaled state :math:`\hat x = x/\alpha_t` of a linear ``sde``.

    :math:`x_t = \alpha_t x_0 + \sigma_t n` becomes :math:`\hat x_t = x_0 + \tilde\sigma_t n`, with
    the noise level :math:`\tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}` (Karras et al. 2022,
    eq. 4; k-diffusion's variables), on the same times (``T``, ``eps``) and with the same log-SNR
    :math:`\lambda_t`. Its PF-ODE in :math:`\tilde\sigma` is

    .. math:: \frac{d\hat x}{d\tilde\sigma} = -\tilde\sigma\,\hat s(\hat x, t),\qquad
              \hat s(\hat x, t) = \alpha_t\,s(\alpha_t\hat x, t),

    :math:`\hat s` the score of :math:`\hat x_t`, whose density is :math:`p_t(\alpha_t\hat x)\,\alpha_t^D`.
    The change of variables is exact, so the log-likelihood is the same; only the solver's path
    differs:

    .. math:: \log p_\varepsilon(x) = \log\hat p_\varepsilon(x/\alpha_\varepsilon) - D\log\alpha_\varepsilon,
              \qquad \log\hat p_T(\hat z) = \log p_T(\alpha_T\hat z) + D\log\alpha_T.

    On a VE SDE (:math:`\alpha_t = 1`) it is the SDE itself. When it takes fewer evaluations than
    the data frame is measured in ``benchmarks/RESULTS.md`` (the likelihood's equal-accuracy
    comparison).
    """

    alpha_is_one = True

    def __init__(self, sde: LinearSDEBase):
        self.sde = sde
        self.T, self.eps = sde.T, sde.eps

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.sde.marginal(t)
        return torch.ones_like(alpha), sigma / alpha

    def f(self, t: Tensor | float) -> Tensor:
        return torch.zeros_like(self.time(t))

    def g(self, t: Tensor | float) -> Tensor:
        r""":math:`\hat g^2 = d\tilde\sigma^2/dt = -2\tilde\sigma^2\,d\lambda_t/dt`."""
        t = self.time(t)
        return self.marginal(t)[1] * (-2 * self.sde.dlog_snr_dt(t)).clamp_min(0).sqrt()

    def log_snr(self, t: Tensor | float) -> Tensor:
        return self.sde.log_snr(t)

    def dlog_snr_dt(self, t: Tensor | float) -> Tensor:
        return self.sde.dlog_snr_dt(t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return self.sde.t_from_log_snr(lam)

    def __repr__(self) -> str:
        return f"ScaledFrameSDE({self.sde!r})"


def scaled_score(score_fn: ScoreFn, sde: LinearSDEBase) -> ScoreFn:
    r""":math:`\hat s(\hat x, t) = \alpha_t\,s(\alpha_t\hat x, t)`, the score of the scaled state."""

    def score(x_hat: Tensor, t: Tensor) -> Tensor:
        alpha = expand_to(sde.marginal(t)[0], x_hat)
        return alpha * call_score(score_fn, alpha * x_hat, t)

    return score


def check_frame(frame: str, sde) -> None:
    """Refuse an unknown ``frame``, or ``"scaled"`` for an SDE that is not linear."""
    check_choice("frame", frame, FRAMES)
    if frame == "scaled" and not isinstance(sde, LinearSDEBase):
        raise ArgumentError(f"frame='scaled' needs a linear SDE (x_t = alpha_t x_0 + sigma_t n, a "
                            f"LinearSDEBase); {type(sde).__name__} is not one: use frame='data'")
