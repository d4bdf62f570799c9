"""Data sets: toy sets, the analytic mixture's exact density, digits, npz, image folders."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as ss
from scoresde.data import (
    TOY_NAMES,
    ImageData,
    MixtureDataset,
    TensorData,
    ToyDataset,
    as_dataset,
    digits_dataset,
    image_folder,
    load_npz,
    toy_sample,
)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_sets_are_seeded_2d_and_scaled(name):
    a = toy_sample(name, 4000, seed=1)
    b = toy_sample(name, 4000, generator=torch.Generator().manual_seed(1))
    c = toy_sample(name, 4000, seed=2)
    assert a.shape == (4000, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    std = a.std(0)
    assert torch.all((std > 0.3) & (std < 3.0)), std
    assert a.abs().max() < 10


def test_toy_set_shapes_are_right():
    x = toy_sample("8gaussians", 8000, seed=0, noise=0.0)
    angles = torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)
    assert torch.allclose(x.norm(dim=1), torch.full((8000,), 2.0), atol=1e-5)
    assert torch.allclose(angles, angles.round(), atol=1e-5)
    assert len(set(angles.round().tolist())) == 8
    r = toy_sample("rings", 6000, seed=0, noise=0.0).norm(dim=1) / 0.8
    assert torch.allclose(r, r.round(), atol=1e-5) and set(r.round().tolist()) == {1.0, 2.0, 3.0}
    cb = toy_sample("checkerboard", 6000, seed=0)
    cells = (torch.floor(cb[:, 0]) + torch.floor(cb[:, 1])) % 2
    assert torch.all(cells == 0)  # only the "black" squares of the board
    with pytest.raises(ValueError, match="name must be one of"):
        toy_sample("spiral", 10)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        toy_sample("moons", 0)
    ds = ToyDataset("moons", 100, seed=3)
    assert len(ds) == 100 and torch.equal(ds[5], toy_sample("moons", 100, seed=3)[5])


def test_mixture_dataset_density_is_exact():
    gmm = ss.analytic.ring_mixture()
    ds = MixtureDataset(gmm, 5000, seed=0, dtype=torch.float64)
    x = ds.data
    torch.testing.assert_close(ds.log_prob(x), gmm.log_prob(x, 0.0, ss.VPSDE()))
    # a Monte-Carlo check of normalisation: E_uniform[p]*area = 1 over a box holding the mass
    box = torch.rand(400_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 12 - 6
    mass = float(ds.log_prob(box).exp().mean() * 144)
    assert abs(mass - 1) < 0.02
    assert abs(float(ds.nll()) - float(-gmm.log_prob(x, 0.0, ss.VPSDE()).mean())) < 1e-12
    other = MixtureDataset(gmm, 5000, seed=1, dtype=torch.float64)
    assert not torch.equal(other.data, x)
    with pytest.raises(ValueError, match="GaussianMixture"):
        MixtureDataset("ring")


def test_digits_shapes_split_and_dequantisation():
    train, test = digits_dataset("train"), digits_dataset("test")
    assert len(train) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    assert train.shape == (1, 8, 8) and train[0].shape == (1, 8, 8)
    rows = lambda d: sorted(bytes(r) for r in d.levels.numpy())  # noqa: E731
    assert sorted(rows(train) + rows(test)) == rows(digits_dataset("all"))  # a partition of the 1797 images
    g = torch.Generator().manual_seed(0)
    x = train.train_batch(torch.arange(len(train)), g)
    assert x.min() >= -1 and x.max() < 1
    # every value lies in its own level's bin, and the offsets u look uniform
    assert torch.equal(train.to_levels(x), train.levels.to(torch.int64))
    u = (x + 1) / 2 * 17 - train.levels
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert torch.equal(train.to_levels(train[torch.arange(10)]), train.levels[:10].to(torch.int64))
    # a different generator draws different offsets; no dequantisation gives bin centres
    assert not torch.equal(x, train.train_batch(torch.arange(len(train)), torch.Generator().manual_seed(1)))
    centres = digits_dataset("train", dequantize=False).train_batch(torch.arange(4))
    torch.testing.assert_close(centres, train[torch.arange(4)])


def test_bits_per_dim_of_the_uniform_density_is_log2_levels():
    data = digits_dataset("test")
    d = 64
    log_p_uniform = torch.full((3,), -d * math.log(2.0))  # uniform density on [-1, 1]^64
    torch.testing.assert_close(data.bits_per_dim(log_p_uniform), torch.full((3,), math.log2(17)))


@given(levels=st.integers(2, 300), low=st.floats(-5, 0), width=st.floats(0.1, 10))
@settings(max_examples=30)
def test_image_scaling_round_trip(levels, low, width):
    v = torch.randint(0, levels, (4, 1, 3, 3), generator=torch.Generator().manual_seed(levels))
    data = ImageData(v, levels, low=low, high=low + width, dtype=torch.float64)
    x = data.train_batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert torch.equal(data.to_levels(x), v)
    assert torch.equal(data.to_levels(data[torch.arange(4)]), v)


def test_image_data_errors():
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 16\]"):
        ImageData(torch.full((2, 8, 8), 17), 17)
    with pytest.raises(ValueError, match="shape"):
        ImageData(torch.zeros(2, 8), 17)
    with pytest.raises(ValueError, match="split"):
        digits_dataset("val")


def test_npz_and_tensor_loading(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(50))
    ds = load_npz(tmp_path / "a.npz")
    assert isinstance(ds, TensorData) and torch.equal(ds.data, torch.from_numpy(x))
    assert torch.equal(load_npz(tmp_path / "a.npz", key="y").data.squeeze(1), torch.arange(50.0))
    imgs = np.random.default_rng(1).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", imgs)
    im = load_npz(tmp_path / "img.npz")
    assert isinstance(im, ImageData) and im.shape == (3, 8, 8) and im.num_levels == 256
    assert torch.equal(im.levels.to(torch.int64), torch.from_numpy(imgs.transpose(0, 3, 1, 2)).to(torch.int64))
    np.save(tmp_path / "b.npy", x)
    assert torch.equal(as_dataset(str(tmp_path / "b.npy")).data, torch.from_numpy(x))
    with pytest.raises(ValueError, match="key must be one of"):
        load_npz(tmp_path / "a.npz", key="z")
    with pytest.raises(ValueError, match="does not exist"):
        load_npz(tmp_path / "none.npz")
    assert torch.equal(as_dataset(torch.ones(3, 2)).data, torch.ones(3, 2))
    assert as_dataset(ds) is ds
    with pytest.raises(ValueError, match="data must be"):
        as_dataset(42)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "sub").mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / ("sub" if i else ".") / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = image_folder(tmp_path)
    assert len(ds) == 3 and ds.shape == (3, 8, 8)
    assert torch.equal(ds.levels[0].to(torch.int64), torch.from_numpy(arrays[0].transpose(2, 0, 1)).to(torch.int64))
    gray = image_folder(tmp_path, grayscale=True, image_size=4)
    assert gray.shape == (1, 4, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a directory"):
        image_folder(tmp_path / "missing")


def test_trainer_trains_on_every_kind_of_data():
    sde = ss.VPSDE()
    for data, net in [
        (ToyDataset("swiss_roll", 64), ss.MLP(2, 8, 1)),
        (torch.randn(64, 3), ss.MLP(3, 8, 1)),
        (digits_dataset("test"), ss.UNet(1, 8, base=4, channel_mults=(1, 2), attn_resolutions=())),
    ]:
        tr = ss.Trainer(ss.ScoreModel(net, sde), ss.DSMLoss(sde), data, None, steps=2, batch_size=8, progress=False)
        tr.fit()
        assert tr.step == 2
