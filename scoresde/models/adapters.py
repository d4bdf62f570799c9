r"""Pretrained networks of other libraries as continuous-time score functions.

**diffusers.** A diffusers UNet is trained on a discrete DDPM schedule
:math:`\bar\alpha_k` (``scheduler.alphas_cumprod``, :math:`k = 0, \dots, N-1`): at timestep
:math:`k` it sees :math:`x = \sqrt{\bar\alpha_k}\,x_0 + \sqrt{1-\bar\alpha_k}\,\epsilon` and
predicts, by the scheduler's ``prediction_type``, the noise :math:`\epsilon` (``"epsilon"``),
the data :math:`x_0` (``"sample"``) or :math:`v = \sqrt{\bar\alpha_k}\,\epsilon -
\sqrt{1-\bar\alpha_k}\,x_0` (``"v_prediction"``). :class:`~scoresde.sde.DiscreteVPSDE` is that
schedule as a VP SDE on :math:`[0, 1]` with :math:`\alpha_{t_k}^2 = \bar\alpha_k` at
:math:`t_k = (k+1)/N`, so the score at continuous :math:`t` is

.. math:: s(x, t) = \texttt{to\_score}\big(F(x,\ tN - 1),\ x,\ t\big),

the network :math:`F` called at the real-valued timestep :math:`tN - 1` (its sinusoidal time
embedding takes any real number) and its prediction converted by
:meth:`~scoresde.sde.LinearSDEBase.to_score`. On the grid :math:`t_k` this is the network
exactly as diffusers' schedulers call it, so DDIM is ``dpm_solver`` of order 1 on the times of
``scheduler.timesteps`` (its last step to :math:`\bar\alpha = 1` is ``denoise=True``), and
DPM-Solver++(2M) and DDPM ancestral sampling match likewise (tests/models/test_adapters.py).
What a scheduler does to the prediction *between* network and update (``clip_sample``,
``thresholding``) is not part of the model and is not carried over.

**EDM / k-diffusion denoisers.** A denoiser :math:`D(x, \sigma) \approx \mathbb E[x_0 \mid
x_0 + \sigma n = x]` is trained in the variance-exploding parameterisation. Under a linear SDE
:math:`x_t = \alpha_t x_0 + \sigma_t n`, the scaled state :math:`x_t/\alpha_t = x_0 +
(\sigma_t/\alpha_t)\,n` is at noise level :math:`\sigma_t/\alpha_t`, hence

.. math:: \hat x_0 = D\big(x/\alpha_t,\ \sigma_t/\alpha_t\big),\qquad
          s(x, t) = \frac{\alpha_t \hat x_0 - x}{\sigma_t^2},

which on VE or EDM SDEs (:math:`\alpha_t = 1`) is the familiar :math:`(D(x, \sigma) - x)/\sigma^2`.

diffusers is an optional dependency (``pip install 'scoresde[diffusers]'``), imported only by
the functions that need it; nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ArgumentError, check_callable, check_dtype, check_float_tensor
from ..sde import DiscreteVPSDE, LinearSDEBase

#: diffusers' prediction_type -> the kind of :meth:`~scoresde.sde.LinearSDEBase.to_score`
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}

#: the diffusers network classes :func:`from_diffusers` and :func:`load_diffusers` take
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")

#: schedulers whose ``alphas_cumprod`` come from a DDPM beta schedule (a folder's scheduler
#: config is read through DDPMScheduler whatever it names; other kinds, such as flow matching,
#: are refused rather than silently read as a default schedule)
DDPM_FAMILY_SCHEDULERS = (
    "DDPMScheduler", "DDIMScheduler", "DDPMParallelScheduler", "DDIMParallelScheduler", "PNDMScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler",
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "LMSDiscreteScheduler",
    "UniPCMultistepScheduler", "DEISMultistepScheduler", "LCMScheduler", "TCDScheduler",
)

_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ArgumentError(
            "diffusers models need the optional dependency diffusers: pip install 'scoresde[diffusers]'"
        ) from None
    return diffusers


def _freeze(module: nn.Module) -> nn.Module:
    """Eval mode (no dropout) and no parameter gradients: the adapters are score functions, and
    the likelihood differentiates them in ``x`` only."""
    return module.eval().requires_grad_(False)


def _float_net_dtype(module: nn.Module) -> torch.dtype | None:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class DiffusersScoreModel(nn.Module):
    r"""A diffusers UNet as the score :math:`s(x, t)` of a :class:`~scoresde.sde.DiscreteVPSDE`
    (see the module): ``model(x, t)``, ``model(x, t, y)`` with class labels ``y`` (a
    class-conditional UNet2DModel's ``class_labels``), or ``model(x, t, **cond)`` with the
    network's own conditioning keywords (``encoder_hidden_states=`` of a UNet2DConditionModel).

    Built by :func:`from_diffusers`. The input may be float32 or float64 whatever the network's
    dtype: it is cast to the network's dtype and the score returned in the input's.

    Attributes:
        unet: the network (eval mode, weights frozen).
        sde: the :class:`~scoresde.sde.DiscreteVPSDE` of the scheduler's schedule.
        prediction_type: diffusers' name (``"epsilon"``, ``"v_prediction"``, ``"sample"``).
    """

    def __init__(self, unet: nn.Module, sde: DiscreteVPSDE, prediction_type: str, *, learned_variance: bool = False):
        super().__init__()
        self.unet = _freeze(unet)
        self.sde = sde
        self.prediction_type = prediction_type
        self.kind = PREDICTION_TYPES[prediction_type]
        self.learned_variance = learned_variance
        self.eval()

    def timestep(self, t: Tensor) -> Tensor:
        r"""The network's timestep :math:`k = tN - 1` for times ``t``.

        A :math:`k` within round-off of an integer (the times :math:`t_k = (k+1)/N` are not exact
        in floating point) is passed as that integer, as diffusers' schedulers pass it.
        """
        k = self.sde.timestep_from_t(t)
        nearest = k.round()
        tol = 4 * torch.finfo(t.dtype).eps * self.sde.num_timesteps
        return torch.where((k - nearest).abs() <= tol, nearest, k)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, **cond) -> Tensor:
        check_float_tensor("x", x, solver=True)
        t = self.sde.time(t, like=x)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if y is not None:
            cond = {**cond, "class_labels": y}
        dtype = _float_net_dtype(self.unet) or x.dtype
        k = self.timestep(t)
        out = self.unet(x.to(dtype), k.to(torch.float64 if dtype == torch.float64 else torch.float32),
                        **cond, return_dict=False)[0]
        if self.learned_variance:  # the second half of the channels is the variance, not the mean
            out = out[:, : x.shape[1]]
        return self.sde.to_score(out.to(x.dtype), x, t, self.kind)

    def extra_repr(self) -> str:
        return f"prediction_type={self.prediction_type!r}, sde={self.sde!r}"


def _prediction_type(scheduler) -> str:
    config = getattr(scheduler, "config", None)
    kind = getattr(config, "prediction_type", None) if config is not None else None
    if kind not in PREDICTION_TYPES:
        raise ArgumentError(
            f"scheduler.config.prediction_type must be one of {', '.join(map(repr, PREDICTION_TYPES))} "
            f"(a diffusers DDPM-type scheduler), got {kind!r}"
        )
    return kind


def _check_unet(unet) -> None:
    diffusers = _diffusers()
    classes = tuple(getattr(diffusers, name) for name in UNET_CLASSES)
    if not isinstance(unet, classes):
        raise ArgumentError(
            f"unet must be a diffusers {' or '.join(UNET_CLASSES)}, got {type(unet).__module__}.{type(unet).__name__}"
        )


def from_diffusers(unet: nn.Module, scheduler) -> tuple[DiffusersScoreModel, DiscreteVPSDE]:
    r"""A diffusers UNet and its training scheduler as ``(model, sde)``: ``model(x, t, **cond)`` is
    the continuous-time score of ``sde`` = :meth:`DiscreteVPSDE.from_diffusers(scheduler)
    <scoresde.sde.DiscreteVPSDE.from_diffusers>` (see the module for the math).

    Args:
        unet: a ``diffusers.UNet2DModel`` or ``UNet2DConditionModel``; put in eval mode and its
            weights frozen (``requires_grad_(False)``), in place.
        scheduler: any diffusers scheduler with ``alphas_cumprod`` (DDPM, DDIM, DPM-Solver, Euler,
            ...); its ``config.prediction_type`` (``"epsilon"``, ``"v_prediction"`` or ``"sample"``)
            says what the network predicts. Its sampling options (timestep spacing, clipping,
            thresholding) do not enter the model.

    Returns:
        ``(model, sde)``: a :class:`DiffusersScoreModel` (an ``nn.Module``, differentiable in
        ``x``) and the :class:`~scoresde.sde.DiscreteVPSDE`. Times of diffusers' timesteps are
        ``sde.t_from_timestep(scheduler.timesteps)``.

    Raises:
        ArgumentError: ``unet`` is not a supported diffusers class, the scheduler's
            ``prediction_type`` is unknown, or it has no discrete VP schedule.
    """
    _check_unet(unet)
    if not isinstance(getattr(scheduler, "alphas_cumprod", None), Tensor):
        raise ArgumentError(
            f"scheduler must be a diffusers scheduler of a discrete DDPM schedule (with alphas_cumprod), "
            f"got {type(scheduler).__name__}"
        )
    kind = _prediction_type(scheduler)
    sde = DiscreteVPSDE.from_diffusers(scheduler)
    variance_type = getattr(scheduler.config, "variance_type", None)
    channels = unet.config.in_channels
    learned = variance_type in ("learned", "learned_range") and unet.config.out_channels == 2 * channels
    if unet.config.out_channels != channels and not learned:
        raise ArgumentError(
            f"unet has {unet.config.out_channels} output channels for {channels} input channels; a score needs "
            f"as many (or twice as many with the scheduler's variance_type 'learned' / 'learned_range')"
        )
    return DiffusersScoreModel(unet, sde, kind, learned_variance=learned), sde


# ---- a folder written with save_pretrained ------------------------------------------------------
def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise ArgumentError(f"{what} {str(path)!r} is not a readable JSON file: {err}") from None
    if not isinstance(config, dict):
        raise ArgumentError(f"{what} {str(path)!r} must hold a JSON object")
    return config


def _layout(folder: Path) -> tuple[Path, Path]:
    """(the UNet's folder, the scheduler's config file) of a pipeline folder (``unet/``,
    ``scheduler/``) or of a folder holding both side by side."""
    if (folder / "unet" / "config.json").is_file():
        unet_dir = folder / "unet"
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
    elif (folder / "config.json").is_file():
        unet_dir, scheduler_file = folder, folder / "scheduler_config.json"
    else:
        raise ArgumentError(
            f"{str(folder)!r} holds no diffusers UNet: expected unet/config.json (a pipeline folder) or "
            f"config.json (a folder written by unet.save_pretrained)"
        )
    if not scheduler_file.is_file():
        raise ArgumentError(
            f"{str(folder)!r} holds no scheduler config: expected {str(scheduler_file)!r} (written by "
            f"scheduler.save_pretrained); the scheduler says the noise schedule and what the network predicts"
        )
    if not any((unet_dir / name).is_file() for name in _WEIGHTS):
        raise ArgumentError(
            f"{str(unet_dir)!r} holds no safetensors weights ({_WEIGHTS[0]}); only safetensors are loaded "
            f"(save with unet.save_pretrained(folder), whose default is safetensors)"
        )
    return unet_dir, scheduler_file


def load_diffusers(
    folder: str | os.PathLike, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[DiffusersScoreModel, DiscreteVPSDE]:
    """``(model, sde)`` of :func:`from_diffusers` from a local folder written with ``save_pretrained``.

    The folder is a pipeline folder (``unet/`` and ``scheduler/``) or holds the UNet's
    ``config.json`` and weights next to ``scheduler_config.json``. Nothing in it decides what is
    imported: the network class is looked up in a fixed table (:data:`UNET_CLASSES`) by the
    config's ``_class_name``; the scheduler config is read by ``diffusers.DDPMScheduler`` (for
    ``alphas_cumprod`` and ``prediction_type``) and must name a DDPM-family scheduler
    (:data:`DDPM_FAMILY_SCHEDULERS`). Weights are loaded from safetensors only, from local
    files only.

    Args:
        folder: the folder.
        device, dtype: where and in what floating dtype to put the network (default: as stored, CPU).
    """
    diffusers = _diffusers()
    folder = Path(folder)
    if not folder.is_dir():
        raise ArgumentError(f"diffusers folder {str(folder)!r} does not exist or is not a folder")
    if dtype is not None:
        check_dtype("dtype", dtype)
    unet_dir, scheduler_file = _layout(folder)
    name = _read_json(unet_dir / "config.json", "UNet config").get("_class_name")
    if name not in UNET_CLASSES:
        raise ArgumentError(
            f"{str(unet_dir / 'config.json')!r} describes a {name!r}; supported networks: {', '.join(UNET_CLASSES)}"
        )
    sched_config = _read_json(scheduler_file, "scheduler config")
    sched_name = sched_config.get("_class_name")
    if sched_name not in DDPM_FAMILY_SCHEDULERS:
        raise ArgumentError(
            f"{str(scheduler_file)!r} describes a {sched_name!r}, not a scheduler of a discrete DDPM schedule "
            f"(supported: {', '.join(DDPM_FAMILY_SCHEDULERS)})"
        )
    try:
        scheduler = diffusers.DDPMScheduler.from_config(sched_config)
    except (ValueError, NotImplementedError, TypeError) as err:
        raise ArgumentError(f"{str(scheduler_file)!r}: {err}") from None
    _prediction_type(scheduler)  # before loading any weights
    # low_cpu_mem_usage needs accelerate; without it diffusers would warn and fall back anyway
    lazy_init = importlib.util.find_spec("accelerate") is not None
    try:
        unet = getattr(diffusers, name).from_pretrained(unet_dir, use_safetensors=True, local_files_only=True,
                                                         low_cpu_mem_usage=lazy_init)
    except (OSError, ValueError, RuntimeError) as err:
        raise ArgumentError(f"cannot load the {name} in {str(unet_dir)!r}: {str(err).splitlines()[0]}") from None
    if device is not None or dtype is not None:
        unet = unet.to(device=device, dtype=dtype)
    return from_diffusers(unet, scheduler)


# ---- EDM / k-diffusion denoisers -----------------------------------------------------------------
class DenoiserScoreModel(nn.Module):
    r"""An EDM / k-diffusion denoiser :math:`D(x, \sigma)` as the score of a linear SDE:
    :math:`s(x,t) = (\alpha_t D(x/\alpha_t, \sigma_t/\alpha_t) - x)/\sigma_t^2` (see the module).

    ``model(x, t)``; ``model(x, t, y)`` passes ``y`` as the denoiser's third argument (EDM's
    ``class_labels``), and keywords go to it as they are. Built by :func:`from_denoiser`.
    """

    def __init__(self, denoiser: Callable, sde: LinearSDEBase):
        super().__init__()
        if isinstance(denoiser, nn.Module):
            self.denoiser = _freeze(denoiser)  # registered: .to(), state_dict() reach it
        else:
            self._denoiser = denoiser
        self.sde = sde
        self.eval()

    def _call(self, *args, **kwargs):
        d = self.denoiser if "denoiser" in self._modules else self._denoiser
        return d(*args, **kwargs)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, **cond) -> Tensor:
        check_float_tensor("x", x, solver=True)
        t = self.sde.time(t, like=x)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        alpha, sigma = self.sde.marginal(t)
        scale = alpha.reshape(-1, *[1] * (x.dim() - 1))
        args = (x / scale, sigma / alpha) if y is None else (x / scale, sigma / alpha, y)
        x0 = self._call(*args, **cond)
        if not isinstance(x0, Tensor) or x0.shape != x.shape:
            got = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
            raise ArgumentError(f"the denoiser must return a tensor of x's shape {tuple(x.shape)}, got {got}")
        return self.sde.to_score(x0.to(x.dtype), x, t, "x0")


def from_denoiser(denoiser: Callable, sde: LinearSDEBase) -> DenoiserScoreModel:
    r"""An EDM / k-diffusion denoiser ``D(x, sigma)`` (``sigma`` of shape ``(batch,)``, returning
    the denoised ``x``) as a score function of the linear SDE ``sde``.

    On a VE or EDM SDE (:math:`\alpha_t = 1`) the denoiser sees ``x`` at noise level
    :math:`\sigma_t`; on VP (and any linear SDE) the scaled ``x / alpha_t`` at
    :math:`\sigma_t/\alpha_t`. A module is put in eval mode with its weights frozen, in place.
    """
    check_callable("denoiser", denoiser, "D(x, sigma)")
    if not isinstance(sde, LinearSDEBase):
        raise ArgumentError(
            f"sde must be a linear SDE (VE, EDM, VP, ...: x_t = alpha_t x_0 + sigma_t n), got {type(sde).__name__}"
        )
    return DenoiserScoreModel(denoiser, sde)
