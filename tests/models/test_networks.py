"""MLP, UNet and time embeddings: shapes, initialisation, errors, and that they can fit."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde.models import MLP, GaussianFourierEmbedding, SinusoidalEmbedding, UNet


@given(batch=st.integers(1, 7), dim=st.integers(1, 12), hidden=st.integers(1, 33), depth=st.integers(1, 3),
       emb=st.sampled_from(["fourier", "sinusoidal"]))
@settings(max_examples=25)
def test_mlp_shapes(batch, dim, hidden, depth, emb):
    net = MLP(dim, hidden, depth, embedding=emb, embedding_dim=8)
    out = net(torch.randn(batch, dim), torch.rand(batch))
    assert out.shape == (batch, dim)
    assert torch.all(out == 0)  # zero-initialised output layer


@given(batch=st.integers(1, 3), ch=st.integers(1, 3), levels=st.integers(1, 3), blocks=st.integers(1, 2),
       attn=st.booleans())
@settings(max_examples=6)
def test_unet_shapes(batch, ch, levels, blocks, attn):
    size = 8
    net = UNet(ch, size, base=4, channel_mults=(1, 2, 2)[:levels], num_res_blocks=blocks,
               attn_resolutions=(size // 2,) if attn else ())
    x = torch.randn(batch, ch, size, size)
    torch.nn.init.normal_(net.conv_out.weight)
    out = net(x, torch.rand(batch))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (len(net.attn) > 0) == (attn and levels > 1)


def test_unet_attention_placement_and_time_dependence():
    net = UNet(1, 16, base=8, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,))
    # levels at 16, 8, 4: attention only after the blocks at resolution 8 (one down, two up)
    # levels at 16, 8, 4: attention only after the blocks at resolution 8 (one down; two up,
    # since the up path has num_res_blocks + 1 blocks per level)
    assert sorted(net.attn) == ["d2", "u4", "u5"]
    big = UNet(3, 32, base=4, channel_mults=(1, 2, 2, 2), attn_resolutions=(16, 8))
    assert big(torch.randn(1, 3, 32, 32), torch.rand(1)).shape == (1, 3, 32, 32)
    for p in net.parameters():  # break the zero init so the output depends on x and c
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 16, 16)
    a, b = net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([0.9, 0.9]))
    assert not torch.allclose(a, b)


def test_network_input_errors():
    with pytest.raises(ValueError, match=r"MLP\(dim=2\) expects x of shape \(batch, 2\), got \(3, 5\)"):
        MLP(2)(torch.randn(3, 5), torch.rand(3))
    with pytest.raises(ValueError, match="c must have shape"):
        MLP(2)(torch.randn(3, 2), torch.rand(4))
    with pytest.raises(ValueError, match="dim must be an integer"):
        MLP(0)
    net = UNet(1, 8, base=8)
    with pytest.raises(ValueError, match="expects x of shape"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="images of size 8x8"):
        net(torch.randn(2, 1, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match="image_size must be divisible by 4"):
        UNet(1, 6, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(1, 8, channel_mults=())
    with pytest.raises(ValueError, match="dim must be an even integer"):
        GaussianFourierEmbedding(7)
    with pytest.raises(ValueError, match="embedding must be"):
        MLP(2, embedding="learned")
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        SinusoidalEmbedding(8)(torch.rand(2, 1))


def test_embeddings_values():
    e = SinusoidalEmbedding(8, scale=1.0, max_period=10000.0)
    out = e(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = 10000.0 ** (-torch.arange(4) / 3)
    torch.testing.assert_close(out[1], torch.cat([freqs.sin(), freqs.cos()]))
    f1, f2 = GaussianFourierEmbedding(16, seed=3), GaussianFourierEmbedding(16, seed=3)
    c = torch.rand(5)
    torch.testing.assert_close(f1(c), f2(c))
    assert torch.allclose(f1(c).square().reshape(5, 2, 8).sum(1), torch.ones(5, 8))  # sin^2 + cos^2


def test_mlp_fits_a_time_dependent_function():
    torch.manual_seed(0)
    net = MLP(2, 32, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        x, c = torch.randn(128, 2), torch.rand(128)
        loss = (net(x, c) - x * torch.cos(3 * c)[:, None]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02  # the target's variance is ~0.5
