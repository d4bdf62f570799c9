"""Score networks (MLP, U-Net), time embeddings, and ``ScoreModel`` (eps / score / x0 / v)."""

from .embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .score_model import PARAMETERIZATIONS, ScoreModel
from .unet import UNet

__all__ = ["MLP", "UNet", "ScoreModel", "GaussianFourierEmbedding", "SinusoidalEmbedding", "PARAMETERIZATIONS"]
