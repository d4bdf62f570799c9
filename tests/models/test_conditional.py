"""Class-conditional networks and ScoreModel(x, t, y): labels reach the network, y=None is the null
class, unconditional models are exactly what they were, and bad labels are named."""

import pytest
import torch
from torch import nn

import scoresde as ss

SDE = ss.VPSDE()


def _mlp(**kw):
    return ss.MLP(2, 16, 2, **kw)


def _unet(**kw):
    return ss.UNet(1, 8, base=8, channel_mults=(1, 2), attn_resolutions=(4,), **kw)


def _wake(net):
    """Random output layers (they start at zero, which would hide what reaches them)."""
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return net


NETS = {"mlp": (_mlp, (5, 2)), "unet": (_unet, (5, 1, 8, 8))}


@pytest.mark.parametrize("kind", NETS)
def test_labels_change_the_output_and_none_is_the_null_class(kind):
    make, shape = NETS[kind]
    torch.manual_seed(0)
    net = _wake(make(num_classes=3)).eval()
    x, c = torch.randn(shape), torch.linspace(-1, 1, shape[0])
    a = net(x, c, torch.zeros(5, dtype=torch.long))
    b = net(x, c, torch.ones(5, dtype=torch.long))
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(net(x, c), net(x, c, torch.full((5,), 3)))  # None = label K, the null class
    # per sample: each row depends on its own label only
    mixed = net(x, c, torch.tensor([0, 1, 0, 1, 0]))
    torch.testing.assert_close(mixed[0], a[0])
    torch.testing.assert_close(mixed[1], b[1])


@pytest.mark.parametrize("kind", NETS)
def test_an_unconditional_net_is_unchanged_and_a_conditional_one_shares_its_initial_weights(kind):
    make, _ = NETS[kind]
    torch.manual_seed(0)
    plain = make()
    torch.manual_seed(0)
    cond = make(num_classes=10)
    assert "num_classes" not in plain.config and not hasattr(plain, "class_embed")
    assert cond.config["num_classes"] == 10
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"class_embed.table.weight"}
    for k, v in plain.state_dict().items():  # the class embedding is built last: same draws before it
        assert torch.equal(v, cond.state_dict()[k]), k


@pytest.mark.parametrize("kind", NETS)
def test_net_label_errors_name_y(kind):
    make, shape = NETS[kind]
    x, c = torch.randn(shape), torch.zeros(shape[0])
    with pytest.raises(ss.ArgumentError, match=r"y: this (MLP|UNet) was built without num_classes"):
        make()(x, c, torch.zeros(shape[0], dtype=torch.long))
    net = make(num_classes=3)
    with pytest.raises(ss.ArgumentError, match=r"y must hold class labels in \[0, 3\] \(3 = the null class\), got 4"):
        net(x, c, torch.full((shape[0],), 4))
    with pytest.raises(ss.ArgumentError, match=r"y must hold class labels .* got -1"):
        net(x, c, torch.full((shape[0],), -1))
    with pytest.raises(ss.ArgumentError, match="y must be an integer tensor of class labels, got dtype torch.float32"):
        net(x, c, torch.zeros(shape[0]))
    with pytest.raises(ss.ArgumentError, match=r"y must have shape \(5,\)"):
        net(x, c, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ss.ArgumentError, match="num_classes must be an integer >= 1, got 0"):
        make(num_classes=0)


def test_score_model_takes_labels_and_y_none_is_unconditional():
    torch.manual_seed(0)
    model = ss.ScoreModel(_wake(_mlp(num_classes=4)), SDE, data_std=2.0)
    assert model.num_classes == 4 and model.config["num_classes"] == 4  # taken from the network
    x, t = torch.randn(6, 2), torch.full((6,), 0.3)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    s_c, s_u = model(x, t, y), model(x, t)
    assert s_c.shape == x.shape and (s_c - s_u).abs().max() > 1e-3
    torch.testing.assert_close(model(x, t, y=torch.full((6,), 4)), s_u)  # label K per sample: unconditional
    _, sigma = SDE.marginal(t)
    torch.testing.assert_close(model.eps(x, t, y), -sigma[:, None] * s_c)
    rebuilt = ss.ScoreModel.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x, t, y), s_c)


def test_an_unconditional_score_model_is_unchanged():
    model = ss.ScoreModel(_mlp(), SDE)
    assert model.num_classes is None and "num_classes" not in model.config
    assert "num_classes" not in model.config["net"]["kwargs"]


class TakesLabels(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.emb = nn.Embedding(4, 2)

    def forward(self, x, c, y=None):
        return self.lin(x) + (0 if y is None else self.emb(y))


class NoLabels(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, c):
        return self.lin(x)


def test_score_model_refuses_a_net_that_takes_no_labels():
    with pytest.raises(ss.ArgumentError, match=r"num_classes=3 but the net MLP was built with num_classes=None: "
                                               r"build it as MLP\(..., num_classes=3\)"):
        ss.ScoreModel(_mlp(), SDE, num_classes=3)
    with pytest.raises(ss.ArgumentError, match="num_classes=3 but the net MLP was built with num_classes=5"):
        ss.ScoreModel(_mlp(num_classes=5), SDE, num_classes=3)
    with pytest.raises(ss.ArgumentError, match=r"needs a net that takes class labels as net\(x, c, y=labels\); "
                                               r"NoLabels.forward has no argument y"):
        ss.ScoreModel(NoLabels(), SDE, num_classes=3)
    model = ss.ScoreModel(TakesLabels(), SDE, num_classes=3)  # a custom network with y= is fine
    assert model(torch.randn(2, 2), torch.full((2,), 0.5), torch.tensor([0, 2])).shape == (2, 2)


def test_score_model_label_errors_name_y():
    cond = ss.ScoreModel(_mlp(num_classes=4), SDE)
    x, t = torch.randn(3, 2), torch.full((3,), 0.5)
    with pytest.raises(ss.ArgumentError, match=r"y must hold class labels in \[0, 4\] \(4 = the null class\), got 7"):
        cond(x, t, torch.tensor([0, 7, 1]))
    with pytest.raises(ss.ArgumentError, match=r"y must have shape \(3,\)"):
        cond(x, t, torch.tensor([[0, 1, 2]]))
    with pytest.raises(ss.ArgumentError, match="y must be a LongTensor of class labels"):
        cond(x, t, [0, 1, 2])
    with pytest.raises(ss.ArgumentError, match=r"y: this ScoreModel is unconditional \(num_classes=None\)"):
        ss.ScoreModel(_mlp(), SDE)(x, t, torch.tensor([0, 1, 2]))


def test_a_conditional_run_reloads_with_its_classes(tmp_path):
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 128, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 16, 1, num_classes=8), sde, data_std=4.0)
    trainer = ss.Trainer(model, ss.DSMLoss(sde, label_dropout=0.3), data, tmp_path / "run", steps=4, batch_size=16,
                         progress=False)
    trainer.fit()
    run = ss.load_run(tmp_path / "run")
    assert run.model.num_classes == 8 and run.config["model"]["num_classes"] == 8
    assert run.config["loss"]["label_dropout"] == 0.3
    x, t, y = torch.randn(4, 2), torch.full((4,), 0.5), torch.tensor([0, 3, 5, 7])
    with torch.no_grad():
        torch.testing.assert_close(run.model(x, t, y), trainer.ema.model(x, t, y))
        torch.testing.assert_close(run.model(x, t), trainer.ema.model(x, t))
    exported = run.save_safetensors(tmp_path / "w.safetensors")
    again = ss.load_run(exported)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x, t, y), run.model(x, t, y))
