r"""``ScoreModel``: a network wrapped into a score function :math:`s_\theta(x, t)`.

For a linear SDE, :math:`x_t = \alpha_t x_0 + \sigma_t n` with :math:`n \sim \mathcal N(0, I)`.
The network :math:`F` sees a scaled input and a noise-level input,

.. math::
    F\Big(\frac{x}{\sqrt{\alpha_t^2\sigma_d^2 + \sigma_t^2}},\ c_t\Big),\qquad
    c_t = \lambda_t / 8 \ \ (\texttt{time\_input="log\_snr"})\quad\text{or}\quad c_t = t/T\ \ (\texttt{"t"}),

where :math:`\sigma_d` is ``data_std`` (so the input has unit scale at every t) and
:math:`\lambda_t = \log(\alpha_t/\sigma_t)` is the log signal-to-noise ratio (clamped to
:math:`[-20, 20]`; the factor 1/8 keeps :math:`c_t` of order one for the built-in SDEs). Its
output :math:`F` is turned into the score :math:`\nabla_x\log p_t(x)` by the
``parameterization``:

* ``"eps"`` -- :math:`F \approx n`: :math:`s = -F/\sigma_t`;
* ``"x0"`` -- :math:`\sigma_d F \approx x_0`: :math:`s = (\alpha_t \sigma_d F - x)/\sigma_t^2` (Tweedie);
* ``"v"`` -- :math:`F \approx v = (a_t n - \sigma_t x_0/\sigma_d)/r_t` with :math:`a_t = \alpha_t\sigma_d`,
  :math:`r_t^2 = a_t^2 + \sigma_t^2` (Salimans & Ho 2022; exactly theirs for VP with :math:`\sigma_d = 1`):
  :math:`n = (\sigma_t x + a_t r_t F)/r_t^2`, :math:`s = -n/\sigma_t`;
* ``"score"`` -- :math:`F \approx \nabla_x \log p_t(x)` directly (the only choice for an SDE
  without a closed-form kernel, where the input is not scaled and ``time_input`` is ``"t"``).

**Class-conditional models** (``num_classes=K``): ``model(x, t, y)`` is the conditional score
:math:`\nabla_x\log p_t(x \mid y)` for labels ``y`` in ``[0, K)`` (a LongTensor of shape
``(batch,)``), and ``model(x, t)`` (``y=None``) the unconditional score
:math:`\nabla_x\log p_t(x)`, which the network computes from its learned null class (label
``K``, allowed per sample). The network is called as ``net(x_in, c, y=labels)``.

**Guidance as an input** (a network built with ``guidance_range=(w_min, w_max)``, e.g. the
student of ``ss.distill(..., guidance=...)``): ``model(x, t, y, guidance=w)`` is the network's
estimate of the classifier-free-guided score :math:`s_u + w\,(s(\cdot\mid y) - s_u)` in one
evaluation (Meng et al. 2023). Such a model needs labels; ``guidance`` defaults to 1 and a
number outside the range it was distilled for is refused. The network is called as
``net(x_in, c, y=labels, w=weights)``.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

from ..errors import ArgumentError, check_float_tensor, check_labels, check_optional_int
from ..sde import SDE, LinearSDEBase
from ..sde.base import expand_to
from .embeddings import check_guidance_weight
from .specs import build_net, build_sde, net_spec, sde_spec

PARAMETERIZATIONS = ("eps", "score", "x0", "v")


def _label_classes(net: nn.Module, num_classes: int | None) -> int | None:
    """The model's number of classes, checked against what the network takes."""
    own = getattr(net, "num_classes", None)
    if num_classes is None:
        return own if isinstance(own, int) and not isinstance(own, bool) else None
    if hasattr(net, "num_classes"):  # a built-in network says what it takes
        if own != num_classes:
            raise ArgumentError(
                f"num_classes={num_classes} but the net {type(net).__name__} was built with num_classes={own!r}: "
                f"build it as {type(net).__name__}(..., num_classes={num_classes})"
            )
        return num_classes
    try:
        params = inspect.signature(net.forward).parameters.values()
    except (TypeError, ValueError):  # not inspectable: its first call will tell
        return num_classes
    if not any(p.name == "y" or p.kind is p.VAR_KEYWORD for p in params):
        raise ArgumentError(
            f"num_classes={num_classes} needs a net that takes class labels as net(x, c, y=labels); "
            f"{type(net).__name__}.forward has no argument y"
        )
    return num_classes


class ScoreModel(nn.Module):
    """A network as a score function: ``model(x, t)`` returns :math:`s_\\theta(x, t)` of ``x``'s shape.

    Args:
        net: a module ``net(x_in, c) -> Tensor`` of ``x``'s shape, ``c`` of shape ``(batch,)``
            (e.g. :class:`~scoresde.models.MLP`, :class:`~scoresde.models.UNet`).
        sde: the forward SDE whose marginals define the parameterisation.
        parameterization: ``"eps"`` (default), ``"score"``, ``"x0"`` or ``"v"``.
        time_input: ``"log_snr"`` (default for linear SDEs) or ``"t"`` (default otherwise).
        data_std: :math:`\\sigma_d`, the data's (rough) standard deviation, for input scaling
            and the ``x0``/``v`` targets.
        scale_input: divide ``x`` by :math:`\\sqrt{\\alpha_t^2\\sigma_d^2+\\sigma_t^2}` (linear SDEs).
        num_classes: :math:`K` for a class-conditional model (its network must take labels,
            ``net(x_in, c, y=...)``, e.g. ``UNet(..., num_classes=K)``); default: the network's own
            ``num_classes`` attribute when it has one, else None (unconditional).

    ``model.config`` describes it as JSON, with the SDE and the network as specs
    (:mod:`scoresde.models.specs`); :meth:`from_config` rebuilds it (what
    :func:`~scoresde.training.load_run` does with a trained run).
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        parameterization: str = "eps",
        *,
        time_input: str | None = None,
        data_std: float = 1.0,
        scale_input: bool = True,
        num_classes: int | None = None,
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ArgumentError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(sde, SDE):
            raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        if parameterization not in PARAMETERIZATIONS:
            raise ArgumentError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        linear = isinstance(sde, LinearSDEBase)
        if not linear and parameterization != "score":
            raise ArgumentError(
                f"parameterization={parameterization!r} needs the closed-form marginals of a LinearSDE (LinearSDEBase); "
                f"{type(sde).__name__} has none: use parameterization='score'"
            )
        if time_input is None:
            time_input = "log_snr" if linear else "t"
        if time_input not in ("log_snr", "t"):
            raise ArgumentError(f"time_input must be 'log_snr' or 't', got {time_input!r}")
        if time_input == "log_snr" and not linear:
            raise ArgumentError(f"time_input='log_snr' needs a LinearSDE, got {type(sde).__name__}")
        if not (isinstance(data_std, (int, float)) and data_std > 0):
            raise ArgumentError(f"data_std must be a positive number, got {data_std!r}")
        self.net = net
        self.sde = sde
        self.parameterization = parameterization
        self.time_input = time_input
        self.data_std = float(data_std)
        self.scale_input = bool(scale_input) and linear
        self.num_classes = _label_classes(net, check_optional_int("num_classes", num_classes))
        self.config = {
            "type": "ScoreModel",
            "parameterization": parameterization,
            "time_input": time_input,
            "data_std": self.data_std,
            "scale_input": self.scale_input,
            "sde": sde_spec(sde),
            "net": net_spec(net),
        }
        if self.num_classes is not None:  # recorded only when set: unconditional configs stay as they were
            self.config["num_classes"] = self.num_classes
        #: ``(w_min, w_max)`` when the network takes the guidance weight as an input (else None)
        self.guidance_range = getattr(net, "guidance_range", None)
        if self.guidance_range is not None and self.num_classes is None:
            raise ArgumentError("the net takes the guidance weight (guidance_range) but no class labels: guidance "
                                "weighs a conditional score against the unconditional one; build it with num_classes=K")

    @classmethod
    def from_config(cls, config: dict[str, Any], *, sde: SDE | None = None, net: nn.Module | None = None) -> ScoreModel:
        """Rebuild a model from its ``config`` (freshly initialised weights).

        The SDE and the network come from their specs when built in, else must be passed as
        ``sde`` / ``net`` (a given one replaces the recorded one). Raises ArgumentError naming
        what is missing or malformed.
        """
        if not isinstance(config, dict) or config.get("type") != "ScoreModel":
            raise ArgumentError(f"the model config does not describe a ScoreModel (got {str(config)[:80]!r})")
        try:
            options = {k: config[k] for k in ("parameterization", "time_input", "data_std", "scale_input")}
        except KeyError as err:
            raise ArgumentError(f"the ScoreModel config lacks the key {err.args[0]!r}") from None
        sde = build_sde(config.get("sde")) if sde is None else sde
        net = build_net(config.get("net")) if net is None else net
        return cls(net, sde, options.pop("parameterization"), num_classes=config.get("num_classes"), **options)

    def _check(self, x: Tensor, t: Tensor) -> Tensor:
        check_float_tensor("x", x)
        if x.dim() < 1 or x.shape[0] == 0:
            raise ArgumentError(f"x must have a non-empty batch dimension, got shape {tuple(x.shape)}")
        t = self.sde.time(t, like=x)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ArgumentError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t.to(x.dtype)

    def net_input(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The network's inputs ``(x_in, c)`` at ``(x, t)`` (see the module docstring)."""
        t = self._check(x, t)
        if self.time_input == "log_snr":
            c = self.sde.log_snr(t).clamp(-20.0, 20.0) / 8.0
        else:
            c = t / self.sde.T
        if self.scale_input:
            alpha, sigma = self.sde.marginal(t)
            scale = (alpha.square() * self.data_std**2 + sigma.square()).rsqrt()
            x = x * expand_to(scale, x)
        return x, c

    def _weights(self, guidance, x: Tensor) -> Tensor:
        """The guidance weight per sample, ``(batch,)``; a number is checked against the range."""
        if guidance is None:
            guidance = 1.0
        if isinstance(guidance, Tensor):
            w = guidance.to(device=x.device, dtype=x.dtype)
            w = w.expand(x.shape[0]) if w.dim() == 0 else w
            if w.shape != (x.shape[0],):
                raise ArgumentError(f"guidance must be a number or have shape ({x.shape[0]},), got {tuple(w.shape)}")
            return w
        return x.new_full((x.shape[0],), check_guidance_weight(guidance, self.guidance_range))

    def net_output(self, x: Tensor, t: Tensor, y: Tensor | None = None, guidance=None) -> Tensor:
        """The raw network output :math:`F` at ``(x, t)`` (and labels ``y``, guidance weight
        ``guidance`` where the network takes them), checked to have ``x``'s shape."""
        x_in, c = self.net_input(x, t)
        if self.guidance_range is None and guidance is not None:
            raise ArgumentError("guidance: this ScoreModel does not take the guidance weight as an input; guide a "
                                "class-conditional model with sample(..., cond=labels, guidance=w) instead")
        if self.num_classes is None:
            if y is not None:
                raise ArgumentError("y: this ScoreModel is unconditional (num_classes=None) and takes no class "
                                    "labels; build a class-conditional one with ScoreModel(..., num_classes=K)")
            out = self.net(x_in, c)
        else:
            if y is not None:
                y = check_labels("y", y, self.num_classes, batch=x.shape[0], null=True).to(x.device)
            if self.guidance_range is None:
                out = self.net(x_in, c, y=y)
            elif y is None:
                raise ArgumentError("y: this ScoreModel takes the guidance weight as an input (a guidance-distilled "
                                    "student) and needs class labels: sample it with cond=labels, guidance=w")
            else:
                out = self.net(x_in, c, y=y, w=self._weights(guidance, x))
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ArgumentError(f"net must return a tensor of x's shape {tuple(x.shape)}, got {got}")
        return out

    def output_to_score(self, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """Convert the network output to the score by the parameterisation."""
        if self.parameterization == "score":
            return out
        t = self._check(x, t)
        return self.sde.to_score(out, x, t, self.parameterization, data_std=self.data_std)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, guidance=None) -> Tensor:
        """The score :math:`s_\\theta(x, t)`, or :math:`s_\\theta(x, t \\mid y)` given labels ``y`` of shape
        ``(batch,)``; ``t`` a scalar or of shape ``(batch,)``; ``guidance``: the weight, for a model
        that takes it as an input (see the module)."""
        return self.output_to_score(self.net_output(x, t, y, guidance), x, t)

    def eps(self, x: Tensor, t: Tensor, y: Tensor | None = None, guidance=None) -> Tensor:
        """The implied noise prediction :math:`\\hat n = -\\sigma_t s_\\theta(x, t)` (linear SDEs)."""
        t = self._check(x, t)
        if self.parameterization == "eps":
            return self.net_output(x, t, y, guidance)
        return self.sde.to_eps(self(x, t, y, guidance), x, t, "score")


def with_guidance_input(model: ScoreModel, guidance_range: tuple[float, float]) -> ScoreModel:
    """A copy of a class-conditional ``model`` whose network also takes the guidance weight, for
    weights in ``guidance_range`` (the student that :func:`~scoresde.training.distill` starts
    from with ``guidance=``). The added input starts at zero, so the copy computes the
    conditional score of ``model`` at every weight until it is trained; ``model`` is unchanged.
    """
    import copy

    if not isinstance(model, ScoreModel):
        raise ArgumentError(f"model must be a ScoreModel, got {type(model).__name__}")
    if model.num_classes is None:
        raise ArgumentError("model must be class-conditional (num_classes=K) to take the guidance weight: guidance "
                            "weighs its conditional score against its unconditional one")
    if not callable(getattr(model.net, "add_guidance_input", None)):
        raise ArgumentError(f"model.net ({type(model.net).__name__}) cannot take the guidance weight as an input; "
                            f"the built-in MLP and UNet can (guidance_range=...)")
    new = copy.deepcopy(model)
    new.net.add_guidance_input(guidance_range)
    new.guidance_range = new.net.guidance_range
    new.config["net"] = net_spec(new.net)
    return new
