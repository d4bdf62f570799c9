r"""Sample quality on the 8x8 digits from a small classifier trained here: label accuracy and a
Fréchet feature distance.

**This is not FID.** FID (Heusel et al. 2017) uses the features of an Inception-v3 network
trained on ImageNet; no such weights are available here, and 8x8 digits are far from ImageNet
anyway. Instead :func:`digits_classifier` trains (once, then reads it from a cache) a small
convolutional classifier of scikit-learn's digits, and

* :func:`label_accuracy` is the fraction of class-conditional samples that it assigns to the
  class they were asked for (its own held-out accuracy on real digits, ``classifier.test_accuracy``,
  about 0.98, is the ceiling);
* :func:`digits_frechet_distance` is the Fréchet distance (:func:`~scoresde.metrics.frechet_distance`)
  between Gaussians fitted to its 64 penultimate-layer features of the samples and of real
  digits. Its numbers are comparable only with each other (same classifier, same numbers of
  samples), never with published FIDs. Real held-out digits against real training digits give
  the floor that sampling noise alone produces.

**The cache.** The classifier is defined by :data:`RECIPE` (data split, architecture,
optimiser, epochs, augmentation, seed): a deterministic recipe, trained on the CPU in about
ten seconds. Its weights are saved as safetensors (never a pickle) in
``$XDG_CACHE_HOME/scoresde/`` (default ``~/.cache/scoresde/``), in a file whose name carries a
hash of the recipe, with the recipe and the held-out accuracy in the file's metadata. A file
that is missing, unreadable or of another recipe is (re)trained and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._files import atomic_write_bytes
from ..data import digits_dataset
from ..errors import ArgumentError, check_bool, check_float_tensor, check_labels
from .distances import check_finite_samples
from .frechet import frechet_distance

#: how the classifier is made; any change gives another cache file
RECIPE = {
    "name": "scoresde-digits-classifier",
    "version": 1,
    "data": {"dataset": "sklearn digits", "split": "train", "test_fraction": 0.2, "split_seed": 0,
             "range": [-1.0, 1.0], "dequantize": True},
    "net": {"conv": [32, 32, 64], "features": 64, "classes": 10},
    "train": {"epochs": 30, "batch_size": 64, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
              "schedule": "cosine", "max_shift_pixels": 1, "seed": 0},
}
#: the data range the classifier reads (samples are clamped to it)
LOW, HIGH = -1.0, 1.0


def recipe_key(recipe: dict = RECIPE) -> str:
    """A short hash of the recipe: the cache file's name."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scoresde`` (default ``~/.cache/scoresde``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scoresde"


class DigitsClassifier(nn.Module):
    """Conv(32)-Conv(32)-pool-Conv(64)-pool-FC(64)-FC(10) on ``(batch, 1, 8, 8)`` digits in [-1, 1].

    ``features(x)`` are the 64 ReLU activations before the last layer; ``forward(x)`` the logits.
    """

    def __init__(self):
        super().__init__()
        c1, c2, c3 = RECIPE["net"]["conv"]
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.fc = nn.Linear(c3 * 2 * 2, RECIPE["net"]["features"])
        self.out = nn.Linear(RECIPE["net"]["features"], RECIPE["net"]["classes"])
        self.test_accuracy = float("nan")

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))


def _shift(x: Tensor, gen: torch.Generator, max_shift: int) -> Tensor:
    """Each image translated by up to ``max_shift`` pixels per axis, the border filled with background."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=LOW)
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen)
    rows = off[:, :1] + torch.arange(h)  # (b, h)
    cols = off[:, 1:] + torch.arange(w)  # (b, w)
    return padded[torch.arange(b)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def _train() -> DigitsClassifier:
    """Train a classifier by :data:`RECIPE` (deterministic for a given torch build and thread count)."""
    spec, opt_spec = RECIPE["data"], RECIPE["train"]
    train = digits_dataset("train", test_fraction=spec["test_fraction"], seed=spec["split_seed"])
    test = digits_dataset("test", test_fraction=spec["test_fraction"], seed=spec["split_seed"], dequantize=False)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left where it was
        torch.manual_seed(opt_spec["seed"])
        clf = DigitsClassifier()
    gen = torch.Generator().manual_seed(opt_spec["seed"] + 1)
    n, bs, epochs = len(train), opt_spec["batch_size"], opt_spec["epochs"]
    steps = epochs * math.ceil(n / bs)
    opt = torch.optim.AdamW(clf.parameters(), lr=opt_spec["lr"], weight_decay=opt_spec["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    clf.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            x = _shift(train.train_batch(idx, gen), gen, opt_spec["max_shift_pixels"])
            loss = F.cross_entropy(clf(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    clf.eval()
    with torch.no_grad():
        clf.test_accuracy = float((clf(test[:]).argmax(1) == test.labels).double().mean())
    return clf


def _read(path: Path) -> DigitsClassifier | None:
    """The cached classifier at ``path``, or None (with a warning) when it cannot be used."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if json.loads(meta.get("recipe", "null")) != RECIPE:
            raise ValueError("it was trained by another recipe")
        clf = DigitsClassifier()
        clf.load_state_dict(tensors, strict=True)
        clf.test_accuracy = float(meta["test_accuracy"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        warnings.warn(f"the cached digits classifier {str(path)!r} cannot be used ({first}); retraining it",
                      stacklevel=3)
        return None
    return clf


_LOADED: dict[Path, DigitsClassifier] = {}


def digits_classifier(*, cache_dir: str | os.PathLike | None = None, retrain: bool = False) -> DigitsClassifier:
    """The digits classifier of :data:`RECIPE`, from the cache or trained (and cached) now.

    Args:
        cache_dir: where the weights live (default :func:`default_cache_dir`).
        retrain: train anew and overwrite the cached file.

    Returns:
        the classifier in eval mode with gradients off (the same object on later calls in this
        process); ``.test_accuracy`` is its accuracy on the held-out digits.
    """
    check_bool("retrain", retrain)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"digits_classifier-{recipe_key()}.safetensors"
    if not retrain and path in _LOADED:
        return _LOADED[path]
    clf = _read(path) if path.is_file() and not retrain else None
    if clf is None:
        from safetensors.torch import save

        clf = _train()
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().clone().contiguous() for k, v in clf.state_dict().items()}
        meta = {"recipe": json.dumps(RECIPE, sort_keys=True), "test_accuracy": repr(clf.test_accuracy)}
        atomic_write_bytes(path, save(tensors, metadata=meta))
    clf = clf.eval().requires_grad_(False)
    _LOADED[path] = clf
    return clf


def _images(name: str, x: Tensor) -> Tensor:
    check_float_tensor(name, x)
    if x.dim() == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 1, 8, 8)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8) or x.shape[0] < 1:
        raise ArgumentError(f"{name} must be 8x8 digits of shape (n, 1, 8, 8) (or (n, 64)), got {tuple(x.shape)}")
    check_finite_samples(name, x)
    return x.detach().float().cpu().clamp(LOW, HIGH)


def _apply(fn, x: Tensor, chunk: int = 2048) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def digits_features(x: Tensor, *, classifier: DigitsClassifier | None = None) -> Tensor:
    """The classifier's 64 features of digits ``x`` (``(n, 1, 8, 8)`` in [-1, 1], clamped), shape ``(n, 64)``."""
    clf = classifier or digits_classifier()
    return _apply(clf.features, _images("x", x))


def label_accuracy(samples: Tensor, labels: Tensor | int, *, classifier: DigitsClassifier | None = None) -> float:
    """The fraction of ``samples`` that the digits classifier assigns to ``labels`` (one, or one per sample)."""
    x = _images("samples", samples)
    if isinstance(labels, int) and not isinstance(labels, bool):
        labels = torch.full((x.shape[0],), labels, dtype=torch.long)
    y = check_labels("labels", labels, 10, batch=x.shape[0]).cpu()
    clf = classifier or digits_classifier()
    return float((_apply(clf, x).argmax(1) == y).double().mean())


def digits_frechet_distance(samples: Tensor, reference: Tensor, *, classifier: DigitsClassifier | None = None) -> float:
    """The Fréchet distance between the classifier's features of ``samples`` and of ``reference`` digits
    (e.g. held-out real digits); both ``(n, 1, 8, 8)`` in [-1, 1]. Not Inception FID (see the module doc)."""
    clf = classifier or digits_classifier()
    return float(frechet_distance(digits_features(samples, classifier=clf), digits_features(reference, classifier=clf)))
