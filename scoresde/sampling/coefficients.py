r"""Step coefficients computed on the host, once per grid, and the fused update that applies them.

A step of most samplers on a linear SDE is a linear combination of the state, the model's
outputs and the noise, :math:`x_{i+1} = c_i x_i + \sum_j w_{ij} v_j + \text{std}_i z`, whose
coefficients depend on the grid alone. Computed before the loop in float64 on the host (from
:attr:`Context.host_marginals`), they are Python floats inside a step: no scalar tensor is indexed
or built per step, nothing is read back from the device, and :func:`combine` is one product and
one fused multiply-add per term.
"""

from __future__ import annotations

import math

from torch import Tensor


def phi(j: int, z: float) -> float:
    r""":math:`\varphi_j(z) = \sum_{n\ge0} z^n/(n+j)!` (:math:`\varphi_0 = e^z`), by its series for small
    :math:`|z|` (the closed form :math:`(e^z - \sum_{n<j} z^n/n!)/z^j` cancels there)."""
    if abs(z) < 1.0:
        term, total = 1.0 / math.factorial(j), 0.0
        for n in range(30):
            total += term
            term *= z / (n + j + 1)
        return total
    return (math.exp(z) - sum(z**n / math.factorial(n) for n in range(j))) / z**j


def combine(c: float, x: Tensor, weights: list[float], values: list[Tensor]) -> Tensor:
    r""":math:`c\,x + \sum_j w_j v_j` with host coefficients: one product, then one fused add per term."""
    out = x * c
    for w, v in zip(weights, values, strict=True):
        out.add_(v, alpha=w)
    return out
