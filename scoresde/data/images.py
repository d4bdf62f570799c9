r"""Image data: scikit-learn's 8x8 digits, ``.npz`` arrays and image folders, with dequantisation.

Images with ``L`` integer intensity levels :math:`v \in \{0, \dots, L-1\}` become continuous data
in ``[low, high]`` by uniform dequantisation (Theis et al. 2016; Ho et al. 2020):

.. math:: x = \text{low} + (\text{high}-\text{low})\,\frac{v + u}{L},\qquad u \sim U[0,1)^D .

A density :math:`p(x)` then bounds the discrete likelihood,
:math:`\log P(v) \ge \mathbb E_u \log p(x) + D\log\frac{\text{high}-\text{low}}{L}`, so
bits/dim :math:`= -\big(\log p(x) + D\log\frac{\text{high}-\text{low}}{L}\big)/(D\ln 2)`
(:meth:`ImageData.bits_per_dim`). Training draws fresh :math:`u` every batch (``train_batch``);
indexing (``data[i]``) gives the bin centres :math:`u = \tfrac12`.

**Labels.** :class:`ImageData` and :class:`TensorData` can carry one class label per sample
(``labels``, a LongTensor of shape ``(N,)`` with values in ``[0, num_classes)``); the
:class:`~scoresde.training.Trainer` hands them to a class-conditional model.
:func:`digits_dataset` has its digit labels (0-9).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ArgumentError, check_labels, check_optional_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def as_labels(labels, n: int, num_classes: int | None = None) -> tuple[Tensor, int]:
    """``labels`` (a tensor, array or sequence of ``n`` integers) as int64 of shape ``(n,)``, and the
    number of classes (given, else the largest label + 1); ArgumentError naming ``labels`` otherwise."""
    if isinstance(labels, (str, bytes)):
        raise ArgumentError(f"labels must be a sequence of integer class labels, got {labels!r}")
    try:
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentError(f"labels must be a sequence of integer class labels, got {labels!r:.80}") from None
    num_classes = check_optional_int("num_classes", num_classes)
    if num_classes is None:
        check_labels("labels", y, 2**62, batch=n)  # its type and shape, and no negative label
        num_classes = int(y.max()) + 1 if y.numel() else 1
    return check_labels("labels", y, num_classes, batch=n).cpu(), num_classes


class ImageData(Dataset):
    """Images of integer levels ``(N, C, H, W)`` served as dequantised floats in ``[low, high]``.

    Args:
        levels: integer tensor/array of intensity levels in ``[0, num_levels)``.
        num_levels: :math:`L` (17 for sklearn digits, 256 for 8-bit images).
        low, high: the data range after scaling.
        dequantize: uniform dequantisation in ``train_batch`` (else bin centres).
        dtype: floating dtype of the served tensors.
        labels: optional class labels, one per image (``(N,)`` integers in ``[0, num_classes)``).
        num_classes: the number of classes (default: the largest label + 1).
    """

    def __init__(self, levels, num_levels: int, *, low: float = -1.0, high: float = 1.0,
                 dequantize: bool = True, dtype: torch.dtype = torch.float32, labels=None,
                 num_classes: int | None = None):
        levels = torch.as_tensor(np.asarray(levels) if not isinstance(levels, Tensor) else levels)
        if levels.dim() == 3:
            levels = levels[:, None]
        if levels.dim() != 4:
            raise ArgumentError(f"images must have shape (N, C, H, W) or (N, H, W), got {tuple(levels.shape)}")
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
            raise ArgumentError(f"num_levels must be an integer >= 2, got {num_levels!r}")
        if not high > low:
            raise ArgumentError(f"high must exceed low={low!r}, got {high!r}")
        if levels.numel() and (levels.min() < 0 or levels.max() >= num_levels):
            raise ArgumentError(
                f"image levels must lie in [0, {num_levels - 1}], got [{levels.min().item()}, {levels.max().item()}]"
            )
        if levels.is_floating_point() and not torch.equal(levels, levels.round()):
            raise ArgumentError("image levels must be integers (got non-integer floats)")
        self.levels = levels.to(torch.int16)
        self.num_levels, self.low, self.high = num_levels, float(low), float(high)
        self.dequantize = bool(dequantize)
        self.dtype = dtype
        self.labels, self.num_classes = (None, None) if labels is None else as_labels(labels, len(self), num_classes)

    def __len__(self) -> int:
        return self.levels.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one image ``(C, H, W)``."""
        return tuple(self.levels.shape[1:])

    def to_continuous(self, v: Tensor, u: Tensor | float = 0.5) -> Tensor:
        """Map levels ``v`` and offsets ``u`` in [0, 1) to ``[low, high]``."""
        y = (v.to(self.dtype) + u) / self.num_levels
        return self.low + (self.high - self.low) * y

    def to_levels(self, x: Tensor) -> Tensor:
        """Inverse map: continuous images (e.g. samples) to the nearest integer levels."""
        y = (x - self.low) / (self.high - self.low) * self.num_levels
        return y.floor().clamp(0, self.num_levels - 1).to(torch.int64)

    def __getitem__(self, i) -> Tensor:
        return self.to_continuous(self.levels[i])

    def train_batch(self, idx: Tensor, generator: torch.Generator | None = None) -> Tensor:
        v = self.levels[idx]
        if not self.dequantize:
            return self.to_continuous(v)
        dev = generator.device if generator is not None else v.device
        u = torch.rand(v.shape, generator=generator, dtype=self.dtype, device=dev).to(v.device)
        return self.to_continuous(v, u)

    def dequantized(self, generator: torch.Generator | None = None) -> Tensor:
        """All images, uniformly dequantised with ``generator`` (for held-out likelihoods)."""
        return self.train_batch(torch.arange(len(self)), generator)

    @property
    def log_det_per_dim(self) -> float:
        r""":math:`\log\frac{\text{high}-\text{low}}{L}`, the per-dimension log-Jacobian of the scaling."""
        return math.log((self.high - self.low) / self.num_levels)

    def bits_per_dim(self, log_p: Tensor) -> Tensor:
        """Convert continuous log-densities (nats, per image) to discrete bits/dim."""
        d = math.prod(self.shape)
        return -(log_p + d * self.log_det_per_dim) / (d * math.log(2))


def digits_dataset(split: str = "train", *, test_fraction: float = 0.2, seed: int = 0, low: float = -1.0,
                   high: float = 1.0, dequantize: bool = True, dtype: torch.dtype = torch.float32) -> ImageData:
    """scikit-learn's 8x8 handwritten digits (1797 images, 17 levels) as ``(N, 1, 8, 8)`` images.

    ``split`` is ``"train"``, ``"test"`` (a seeded ``test_fraction`` hold-out) or ``"all"``.
    The images carry their digits as ``labels`` (``num_classes = 10``). Needs scikit-learn (the
    data ship inside it; no download).
    """
    if split not in ("train", "test", "all"):
        raise ArgumentError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0 < test_fraction < 1:
        raise ArgumentError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("digits_dataset needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.int64))  # (1797, 8, 8), values 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * images.shape[0]))
    if split == "test":
        images, labels = images[perm[:n_test]], labels[perm[:n_test]]
    elif split == "train":
        images, labels = images[perm[n_test:]], labels[perm[n_test:]]
    return ImageData(images, 17, low=low, high=high, dequantize=dequantize, dtype=dtype, labels=labels,
                     num_classes=10)


class TensorData(Dataset):
    """A float tensor ``(N, ...)`` as a data set (indexing gives one sample), optionally with one
    class label per sample (``labels``, ``(N,)`` integers in ``[0, num_classes)``; ``num_classes``
    defaults to the largest label + 1)."""

    def __init__(self, data, dtype: torch.dtype | None = None, *, labels=None, num_classes: int | None = None):
        data = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
        if data.dim() == 0:
            raise ArgumentError(f"data must have a leading sample dimension, got shape {tuple(data.shape)}")
        if data.dim() == 1:  # N scalars: N samples of dimension 1
            data = data[:, None]
        if not data.is_floating_point():
            data = data.to(dtype or torch.float32)
        elif dtype is not None:
            data = data.to(dtype)
        self.data = data
        self.labels, self.num_classes = (None, None) if labels is None else as_labels(labels, len(data), num_classes)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i) -> Tensor:
        return self.data[i]

    def train_batch(self, idx: Tensor, generator=None) -> Tensor:
        return self.data[idx]


def load_npz(path: str | Path, key: str | None = None, **image_kwargs) -> Dataset:
    """Load an array from a ``.npz`` (or ``.npy``) file.

    ``uint8`` arrays of shape ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` (C in 1, 3, 4)
    become 256-level :class:`ImageData`; anything else a :class:`TensorData`. ``key`` picks the
    array of a multi-array file (default: the only one, or ``"x"``/``"data"``/``"images"``).
    """
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(f"path {str(path)!r} does not exist")
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        arr = loaded
    else:
        names = list(loaded.files)
        if key is None:
            key = names[0] if len(names) == 1 else next((k for k in ("x", "data", "images") if k in names), None)
            if key is None:
                raise ArgumentError(f"key must name one of the arrays {names} in {str(path)!r}")
        if key not in names:
            raise ArgumentError(f"key must be one of {names}, got {key!r}")
        arr = loaded[key]
    if arr.shape[0] == 0:
        raise ArgumentError(f"{str(path)!r} holds an empty array of shape {arr.shape}")
    if arr.dtype == np.uint8 and arr.ndim in (3, 4):
        if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
            arr = arr.transpose(0, 3, 1, 2)
        return ImageData(arr.astype(np.int64), 256, **image_kwargs)
    return TensorData(arr)


def image_folder(root: str | Path, *, image_size: int | None = None, grayscale: bool = False, **image_kwargs) -> ImageData:
    """All images under ``root`` (recursively, sorted by path) as 256-level :class:`ImageData`.

    Images are converted to RGB (or ``L`` with ``grayscale``) and, with ``image_size``, resized
    to ``image_size x image_size``; otherwise they must all have one size.
    """
    from PIL import Image  # pillow ships with matplotlib

    root = Path(root)
    if not root.is_dir():
        raise ArgumentError(f"root {str(root)!r} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ArgumentError(f"root {str(root)!r} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays = []
    for p in files:
        with Image.open(p) as im:
            im = im.convert("L" if grayscale else "RGB")
            if image_size is not None:
                im = im.resize((image_size, image_size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.int64)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ArgumentError(f"images under {str(root)!r} have different sizes {sorted(shapes)}; pass image_size")
    return ImageData(np.stack(arrays), 256, **image_kwargs)


def as_dataset(data) -> Dataset:
    """A data set from a Tensor/array (:class:`TensorData`), a path (``.npz``/``.npy`` or an image
    folder) or a torch Dataset (returned as is)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (Tensor, np.ndarray)):
        return TensorData(data)
    if isinstance(data, (str, Path)):
        p = Path(data)
        return image_folder(p) if p.is_dir() else load_npz(p)
    raise ArgumentError(f"data must be a Tensor, an array, a path or a torch Dataset, got {type(data).__name__}")
