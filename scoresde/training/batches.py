"""The Trainer's data stream: seeded per-epoch permutations over a Tensor or a map-style Dataset,
and the class labels of the same rows for a class-conditional model."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ArgumentError, CheckpointError


def _describe(data) -> str:
    if isinstance(data, Tensor):
        return f"Tensor{tuple(data.shape)}"
    return type(data).__name__


class _Batches:
    """Draws batches from a Tensor or a map-style data set with a seeded index stream.

    A data set may define ``train_batch(indices, generator) -> Tensor`` (fast fetching with
    randomised dequantisation); a ``TensorDataset`` is indexed directly; any other data set is
    read item by item (the first element of tuple items, e.g. ``(image, label)``).

    Labels (:meth:`fetch_labels`) come from a data set's ``labels`` tensor (``TensorData``,
    ``ImageData``, ``digits_dataset``, ``MixtureDataset``), the second tensor of a
    ``TensorDataset``, or the second element of tuple items.
    """

    def __init__(self, data, seed: int):
        if isinstance(data, (str, bytes)) or not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
            raise ArgumentError(
                f"data must be a Tensor or a map-style torch Dataset (with __len__ and __getitem__), "
                f"got {type(data).__name__}"
            )
        n = len(data)
        if n == 0:
            raise ArgumentError(f"data is empty: got {_describe(data)} with 0 samples")
        self.data, self.n = data, n
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def indices(self, size: int) -> Tensor:
        out = []
        while size > 0:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(size, self.n - self.pos)
            out.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            size -= take
        return torch.cat(out)

    @property
    def draws_randomness(self) -> bool:
        """Whether :meth:`fetch` may draw from its generator (a data set's ``train_batch``)."""
        return not isinstance(self.data, Tensor) and hasattr(self.data, "train_batch")

    def fetch(self, idx: Tensor, generator: torch.Generator | None) -> Tensor:
        d = self.data
        if isinstance(d, Tensor):
            x = d[idx]
        elif hasattr(d, "train_batch"):
            x = d.train_batch(idx, generator)
        elif hasattr(d, "tensors"):
            x = d.tensors[0][idx]
        else:
            items = [d[int(i)] for i in idx]
            items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
            if not all(isinstance(it, Tensor) for it in items):
                raise ArgumentError(f"data items must be tensors (or tuples starting with one), got {type(items[0]).__name__}")
            x = torch.stack(items)
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise ArgumentError(f"data must give floating-point tensors, got {got}")
        return x

    @property
    def labels(self) -> Tensor | None:
        """All the data's labels ``(N,)`` when it holds them as a tensor (None otherwise)."""
        d = self.data
        y = getattr(d, "labels", None)
        if isinstance(y, Tensor):
            return y
        tensors = getattr(d, "tensors", None)
        if isinstance(tensors, (tuple, list)) and len(tensors) >= 2 and isinstance(tensors[1], Tensor):
            return tensors[1]
        return None

    @property
    def has_labels(self) -> bool:
        """Whether :meth:`fetch_labels` can serve labels (a labels tensor, or ``(x, label)`` items)."""
        if isinstance(self.data, Tensor):
            return False
        if self.labels is not None:
            return True
        if hasattr(self.data, "labels") or hasattr(self.data, "tensors") or hasattr(self.data, "train_batch"):
            return False  # declared without labels
        item = self.data[0]
        return isinstance(item, (tuple, list)) and len(item) >= 2

    def fetch_labels(self, idx: Tensor) -> Tensor:
        """The class labels of rows ``idx``, shape ``(len(idx),)`` (as stored: the caller checks them)."""
        y = self.labels
        if y is None:  # (x, label) items, read one by one
            items = [self.data[int(i)] for i in idx]
            return torch.stack([torch.as_tensor(it[1]) for it in items])  # checked by the caller
        return y[idx.to(y.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["perm"].numel()) != self.n:
            raise CheckpointError(
                f"the checkpoint's data order covers {int(state['perm'].numel())} samples but the data set has {self.n}"
            )
        self.generator.set_state(state["generator"].cpu())
        self.perm = state["perm"].cpu().clone()
        self.pos = int(state["pos"])
