"""Data sets: toy 2-D sets, the analytic mixture with its exact density, sklearn digits,
tensors, ``.npz`` files and image folders (with dequantisation), or any torch Dataset."""

from .images import ImageData, TensorData, as_dataset, digits_dataset, image_folder, load_npz
from .mixture import MixtureDataset
from .toy import TOY_NAMES, ToyDataset, toy_sample

__all__ = [
    "TOY_NAMES",
    "toy_sample",
    "ToyDataset",
    "MixtureDataset",
    "ImageData",
    "TensorData",
    "digits_dataset",
    "load_npz",
    "image_folder",
    "as_dataset",
]
