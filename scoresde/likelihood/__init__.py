"""Log-likelihoods through the probability-flow ODE (trace estimators, bits/dim, encode/decode) and
the variational bound on the reverse-SDE model's NLL."""

from ..errors import ODESolveError
from .augmented import AugmentedFlow
from .bits import BitsPerDimResult, bits_per_dim, dequantize
from .bound import NLLBound, nll_bound
from .core import LikelihoodResult, log_likelihood, nats_to_bits_per_dim
from .distributed import DatasetLikelihood, evaluate_log_likelihood
from .divergence import ExactMethod, draw_probes, exact_divergence, hutchinson_divergence, hutchpp_divergence
from .frame import ScaledFrameSDE
from .maps import decode, encode

__all__ = [
    "log_likelihood",
    "evaluate_log_likelihood",
    "DatasetLikelihood",
    "LikelihoodResult",
    "ExactMethod",
    "nll_bound",
    "NLLBound",
    "encode",
    "decode",
    "bits_per_dim",
    "BitsPerDimResult",
    "dequantize",
    "nats_to_bits_per_dim",
    "exact_divergence",
    "hutchinson_divergence",
    "hutchpp_divergence",
    "draw_probes",
    "AugmentedFlow",
    "ScaledFrameSDE",
    "ODESolveError",
]
