"""Score networks (MLP, U-Net), time embeddings, ``ScoreModel`` (eps / score / x0 / v), and adapters
for diffusers models and EDM / k-diffusion denoisers."""

from .adapters import DenoiserScoreModel, DiffusersScoreModel, from_denoiser, from_diffusers, load_diffusers
from .embeddings import GaussianFourierEmbedding, GuidanceEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .score_model import PARAMETERIZATIONS, ScoreModel, with_guidance_input
from .unet import UNet

__all__ = ["MLP", "UNet", "ScoreModel", "GaussianFourierEmbedding", "SinusoidalEmbedding", "GuidanceEmbedding",
           "PARAMETERIZATIONS", "with_guidance_input",
           "from_diffusers", "load_diffusers", "from_denoiser", "DiffusersScoreModel", "DenoiserScoreModel"]
