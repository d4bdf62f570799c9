"""Data sets carry class labels: the digits their digits, mixtures their components, tensors what is given."""

import numpy as np
import pytest
import torch

import scoresde as ss
from scoresde.data import ImageData, TensorData


def test_digits_labels_are_the_digits_of_their_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.int64))
    target = torch.from_numpy(digits.target.astype(np.int64))
    every = ss.digits_dataset("all")
    assert every.num_classes == 10 and torch.equal(every.labels, target)
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    for split, rows in (("test", perm[:359]), ("train", perm[359:])):
        data = ss.digits_dataset(split)
        assert torch.equal(data.levels.long()[:, 0], images[rows]) and torch.equal(data.labels, target[rows])
        assert data.labels.dtype == torch.long and data.num_classes == 10
    assert sorted(torch.bincount(ss.digits_dataset("train").labels).tolist())[0] > 100  # every digit is there


def test_mixture_dataset_labels_are_the_components_drawn():
    gmm = ss.analytic.ring_mixture()
    data = ss.MixtureDataset(gmm, 4000, seed=3)
    assert data.num_classes == gmm.n_components and data.labels.shape == (4000,)
    # the points of label k scatter around component k's mean with its std
    for k in range(gmm.n_components):
        pts = data.data[data.labels == k].double()
        se = gmm.stds[k] / len(pts) ** 0.5
        assert bool(((pts.mean(0) - gmm.means[k]).abs() < 4 * se).all()), k
    # the draw itself is what it always was (labels are recorded, not drawn)
    x = gmm.sample(4000, generator=torch.Generator().manual_seed(3)).float()
    assert torch.equal(data.data, x)


def test_tensor_and_image_data_take_labels():
    d = TensorData(torch.randn(5, 2), labels=[0, 2, 1, 2, 0])
    assert d.num_classes == 3 and d.labels.dtype == torch.long
    assert TensorData(torch.randn(3, 2), labels=np.array([0, 1, 0]), num_classes=5).num_classes == 5
    assert TensorData(torch.randn(3, 2)).labels is None
    img = ImageData(torch.zeros(4, 8, 8, dtype=torch.long), 17, labels=torch.tensor([1, 1, 0, 3]))
    assert img.num_classes == 4 and img[0].shape == (1, 8, 8)  # indexing still gives the image


@pytest.mark.parametrize("labels, kw, message", [
    ([0.0, 1.0, 2.0], {}, "labels must be an integer tensor of class labels, got dtype torch.float64"),
    ([0, 1], {}, r"labels must have shape \(3,\)"),
    ([0, -1, 2], {}, r"labels must hold class labels .* got -1"),
    ([0, 1, 5], {"num_classes": 3}, r"labels must hold class labels in \[0, 2\], got 5"),
    ("abc", {}, "labels must be a sequence of integer class labels"),
    ([0, 1, 2], {"num_classes": 0}, "num_classes must be an integer >= 1"),
])
def test_bad_labels_are_named(labels, kw, message):
    with pytest.raises(ss.ArgumentError, match=message):
        TensorData(torch.randn(3, 2), labels=labels, **kw)
