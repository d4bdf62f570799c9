r"""A time-dependent classifier :math:`p_\phi(y \mid x_t)` trained on noised data, for classifier guidance.

Classifier guidance (Dhariwal & Nichol 2021) samples :math:`p(x \mid y)` from an unconditional
score by adding :math:`w\,\nabla_x \log p_t(y \mid x)`, the gradient of a classifier of the
*noised* data :math:`x_t = \alpha_t x_0 + \sigma_t n` at every noise level (a classifier of clean
data says nothing useful about :math:`x_t` at large t). :class:`NoisyClassifier` is such a
classifier: a network :math:`F` maps the scaled input and the noise level to logits,

.. math::
    \log p_\phi(y \mid x_t) = \mathrm{log\,softmax}\Big(F\Big(\frac{x_t}{\sqrt{\alpha_t^2\sigma_d^2 + \sigma_t^2}},\
    \lambda_t / 8\Big)\Big)_y

(the input scaling and the log-SNR time input of :class:`~scoresde.models.ScoreModel`), and
:func:`fit_noisy_classifier` trains it by cross-entropy on :math:`(x_t, t, y)` with
:math:`t \sim U[\epsilon, T]`, whose minimiser is the exact :math:`p_t(y \mid x_t)`.
``classifier.log_likelihood(labels)`` is what :func:`~scoresde.sampling.classifier_guidance`
takes::

    clf = fit_noisy_classifier(NoisyClassifier(MLP(2, 64, 2, out_dim=K), sde, K), data, steps=1000)
    guided = ss.classifier_guidance(score_fn, clf.log_likelihood(labels), scale=w)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import (
    ArgumentError,
    check_bool,
    check_eps,
    check_float_tensor,
    check_int,
    check_labels,
    check_positive,
    check_seed,
)
from ..sde import SDE, LinearSDEBase
from ..sde.base import expand_to
from .batches import _Batches, _describe


class NoisyClassifier(nn.Module):
    """``clf(x, t) -> logits`` of shape ``(batch, num_classes)``: a classifier of noised data.

    Args:
        net: a module ``net(x_in, c) -> (batch, num_classes)`` with ``c`` of shape ``(batch,)``,
            e.g. ``MLP(D, out_dim=num_classes)``.
        sde: the linear forward SDE whose marginals noise the data.
        num_classes: :math:`K`.
        data_std: :math:`\\sigma_d`, the data's rough standard deviation (input scaling).
        flatten: flatten ``x`` to ``(batch, -1)`` before the network (for an MLP on images).
    """

    def __init__(self, net: nn.Module, sde: SDE, num_classes: int, *, data_std: float = 1.0, flatten: bool = True):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ArgumentError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(sde, LinearSDEBase):
            raise ArgumentError(f"sde must be a linear SDE (LinearSDEBase; the classifier sees x_t = alpha_t x0 + sigma_t n), "
                                f"got {type(sde).__name__}")
        self.net, self.sde = net, sde
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.data_std = check_positive("data_std", data_std)
        self.flatten = check_bool("flatten", flatten)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """The logits of :math:`p_\\phi(y \\mid x_t = x)`, shape ``(batch, num_classes)``."""
        check_float_tensor("x", x)
        t = self.sde.time(t, like=x)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        alpha, sigma = self.sde.marginal(t)
        scale = (alpha.square() * self.data_std**2 + sigma.square()).rsqrt()
        x_in = x * expand_to(scale, x)
        if self.flatten:
            x_in = x_in.reshape(x.shape[0], -1)
        logits = self.net(x_in, self.sde.log_snr(t).clamp(-20.0, 20.0) / 8.0)
        if not isinstance(logits, Tensor) or logits.shape != (x.shape[0], self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ArgumentError(f"net must return logits of shape ({x.shape[0]}, {self.num_classes}), got {got}")
        return logits

    def log_prob(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """:math:`\\log p_\\phi(y \\mid x_t = x)` per sample, shape ``(batch,)``."""
        y = check_labels("y", y, self.num_classes, batch=x.shape[0]).to(x.device)
        return F.log_softmax(self(x, t), dim=-1).gather(1, y[:, None])[:, 0]

    def log_likelihood(self, labels: Tensor | int):
        """``log_likelihood(x, t)`` :math:`= \\log p_\\phi(y \\mid x_t)` for fixed ``labels`` (one, or one
        per sample), the argument :func:`~scoresde.sampling.classifier_guidance` takes."""
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.tensor(check_int("labels", labels, 0, self.num_classes - 1))
        if not isinstance(labels, Tensor):
            raise ArgumentError(f"labels must be an integer or a LongTensor of shape (batch,), got {type(labels).__name__}")
        if labels.dim() == 0:
            check_labels("labels", labels[None], self.num_classes)
        else:
            check_labels("labels", labels, self.num_classes)

        def classifier_log_likelihood(x: Tensor, t: Tensor) -> Tensor:
            y = labels.expand(x.shape[0]) if labels.dim() == 0 else labels
            return self.log_prob(x, t, y)

        return classifier_log_likelihood


def fit_noisy_classifier(classifier: NoisyClassifier, data, *, steps: int = 2000, batch_size: int = 256,
                         lr: float = 2e-3, eps: float | None = None, seed: int = 0) -> NoisyClassifier:
    r"""Train ``classifier`` by cross-entropy on noised labelled data; returns it in eval mode.

    Each step draws a batch :math:`(x_0, y)` (a seeded permutation per epoch, as the
    :class:`~scoresde.training.Trainer` does; a data set's dequantisation too), :math:`t \sim U[\epsilon, T]`
    and :math:`x_t = \alpha_t x_0 + \sigma_t n`, and takes an AdamW step on
    :math:`-\log p_\phi(y \mid x_t)` (learning rate decayed by a cosine to 0). Deterministic
    for a given ``seed``. ``data``: labelled data (``TensorData(x, labels=y)``, ``digits_dataset()``, ...).
    """
    if not isinstance(classifier, NoisyClassifier):
        raise ArgumentError(f"classifier must be a NoisyClassifier, got {type(classifier).__name__}")
    steps, batch_size = check_int("steps", steps), check_int("batch_size", batch_size)
    lr, seed = check_positive("lr", lr), check_seed("seed", seed)
    sde = classifier.sde
    eps = check_eps(sde.eps if eps is None else eps, sde.T)
    batches = _Batches(data, seed)
    if not batches.has_labels:
        raise ArgumentError(f"data ({_describe(data)}) carry no class labels to train a classifier on")
    if batches.labels is not None:
        check_labels("labels", batches.labels, classifier.num_classes, batch=batches.n)
    params = list(classifier.parameters())
    device, dtype = params[0].device, params[0].dtype
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    classifier.train()
    for _ in range(steps):
        idx = batches.indices(batch_size)
        x0 = batches.fetch(idx, gen).to(device=device, dtype=dtype)
        y = check_labels("labels", batches.fetch_labels(idx), classifier.num_classes).to(device)
        t = eps + (sde.T - eps) * torch.rand(x0.shape[0], generator=gen, device=device, dtype=dtype)
        alpha, sigma = (expand_to(v, x0) for v in sde.marginal(t))
        xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=gen, device=device, dtype=dtype)
        loss = F.cross_entropy(classifier(xt, t), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return classifier.eval()
