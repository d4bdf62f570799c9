"""ss.load_run: a run trained through the Python API comes back as the trained EMA model, from
fixed tables of built-in names; nothing in a file can make anything be imported; safetensors export."""

import json
import sys
from pathlib import Path

import pytest
import torch

import scoresde as ss
from scoresde.models.specs import build_sde, sde_spec
from scoresde.training import CheckpointError, load_checkpoint, save_checkpoint


def train(out, sde, net=None, steps=12, **kw):
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 256, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(net if net is not None else ss.MLP(2, 16, 1), sde, data_std=4.0)
    trainer = ss.Trainer(model, ss.DSMLoss(sde), data, out, steps=steps, batch_size=32, lr=1e-3, warmup_steps=2,
                         checkpoint_every=6, progress=False, **kw)
    return trainer.fit()


def scores(model, dtype=torch.float32):
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    t = torch.linspace(0.05, 1.0, 16, dtype=dtype)
    with torch.no_grad():
        return model(x, t)


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VPSDE(schedule="cosine", eps=1e-3), ss.SubVPSDE(0.2, 15.0), ss.VESDE(0.02, 8.0),
                                 ss.VPSDE(schedule="shifted_cosine", shift=0.5),
                                 ss.DiscreteVPSDE(betas=torch.linspace(1e-4, 0.05, 100))],
                         ids=["vp", "vp_cosine", "subvp", "ve", "vp_shifted_cosine", "discrete"])
def test_a_run_trained_through_the_api_round_trips(tmp_path, sde):
    trainer = train(tmp_path, sde)
    run = ss.load_run(tmp_path)
    assert run.step == 12 and run.path.name == "step_00000012.ckpt" and run.weights == "ema"
    assert not run.model.training and not any(p.requires_grad for p in run.model.parameters())
    assert type(run.sde) is type(sde) and run.sde.spec() == sde.spec() and repr(run.sde) == repr(sde)
    assert run.data_shape == (2,) and run.config["train"]["steps"] == 12
    assert torch.equal(scores(run.model), scores(trainer.ema.model))  # the trained EMA model, exactly
    raw = ss.load_run(tmp_path / "checkpoints" / "step_00000012.ckpt", ema=False)
    assert torch.equal(scores(raw.model), scores(trainer.model.eval())) and raw.weights == "raw"


def test_unet_runs_round_trip_and_loading_leaves_the_global_rng_alone(tmp_path):
    data = torch.randn(16, 1, 8, 8)
    sde = ss.VPSDE()
    torch.manual_seed(0)
    net = ss.UNet(1, 8, base=8, channel_mults=(1, 2), attn_resolutions=(4,), dropout=0.1)
    trainer = ss.Trainer(ss.ScoreModel(net, sde, data_std=0.5), ss.DSMLoss(sde), data, tmp_path, steps=2,
                         batch_size=4, progress=False)
    trainer.fit()
    state = torch.get_rng_state()
    run = ss.load_run(tmp_path)
    assert torch.equal(torch.get_rng_state(), state)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        assert torch.equal(run.model(x, t), trainer.ema.model.eval()(x, t))


def test_sde_specs_rebuild_exactly_and_name_only_built_ins():
    for sde in (ss.VPSDE(0.2, 10.0, eps=1e-3), ss.VPSDE(schedule="cosine"), ss.SubVPSDE(), ss.VESDE(0.1, 20.0)):
        spec = json.loads(json.dumps(sde_spec(sde)))  # as a file holds it
        again = build_sde(spec)
        assert type(again) is type(sde) and again.spec() == sde.spec()

    class Steeper(ss.VPSDE):  # a subclass is not the built-in VPSDE
        pass

    assert sde_spec(Steeper())["custom"].endswith(".Steeper") and "name" not in sde_spec(Steeper())
    with pytest.raises(ss.ArgumentError, match="has no argument 'foo'"):
        build_sde({"name": "VPSDE", "kwargs": {"foo": 1}})
    with pytest.raises(ss.ArgumentError, match="beta_min must be a positive"):
        build_sde({"name": "VPSDE", "kwargs": {"beta_min": "x"}})


class RampOU(ss.LinearSDE):
    def __init__(self):
        super().__init__(f=lambda t: -(0.5 + 9.5 * t), g=lambda t: (2 * (0.5 + 9.5 * t)).sqrt())


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x, c):
        return self.lin(torch.cat([x, c[:, None]], 1))


def test_a_custom_sde_or_network_must_be_passed_and_is_named(tmp_path):
    trainer = train(tmp_path / "sde", RampOU())
    with pytest.raises(CheckpointError, match=r"the SDE is '.*:RampOU', which is not built in .* never imported from a "
                                              r"file: pass it explicitly"):
        ss.load_run(tmp_path / "sde")
    run = ss.load_run(tmp_path / "sde", sde=RampOU())
    assert torch.equal(scores(run.model), scores(trainer.ema.model))
    trainer = train(tmp_path / "net", ss.VPSDE(), net=TinyNet())
    with pytest.raises(CheckpointError, match=r"the network is '.*:TinyNet', which is not built in .*load_run\(..., model=...\)"):
        ss.load_run(tmp_path / "net")
    torch.manual_seed(5)
    mine = ss.ScoreModel(TinyNet(), ss.VPSDE(), data_std=4.0)
    run = ss.load_run(tmp_path / "net", model=mine)
    assert run.model is mine and isinstance(run.sde, ss.VPSDE)
    assert torch.equal(scores(run.model), scores(trainer.ema.model))
    with pytest.raises(CheckpointError, match="holds the weights of another architecture: .*missing"):
        ss.load_run(tmp_path / "net", model=ss.ScoreModel(ss.MLP(2, 4, 1), ss.VPSDE()))


def test_format_versions_are_checked(tmp_path):
    train(tmp_path, ss.VPSDE(), steps=6)
    path = tmp_path / "checkpoints" / "step_00000006.ckpt"
    state = load_checkpoint(path)
    for version, message in [(99, r"format_version 99, newer than this scoresde reads \(2\); upgrade"),
                             (1, r"format_version 1, written by an older scoresde"),
                             ("2", r"not a training checkpoint of scoresde \(no format_version\)")]:
        save_checkpoint({**state, "format_version": version}, tmp_path / "x.ckpt")
        with pytest.raises(CheckpointError, match=message):
            ss.load_run(tmp_path / "x.ckpt")
    save_checkpoint({"weights": torch.ones(2)}, tmp_path / "y.ckpt")
    with pytest.raises(CheckpointError, match="no format_version"):
        ss.load_run(tmp_path / "y.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ss.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        ss.load_run(tmp_path / "empty")


EVIL = "from pathlib import Path\nPath(__file__).with_name('IMPORTED').write_text('ran')\nclass Evil:\n    pass\n"


@pytest.mark.parametrize("where, spec", [
    ("sde", {"name": "evil_mod:Evil", "kwargs": {}}),
    ("sde", {"custom": "evil_mod:Evil"}),
    ("net", {"name": "evil_mod:Evil", "kwargs": {}}),
    ("net", {"name": "evil_mod", "kwargs": {}}),
])
def test_a_crafted_checkpoint_cannot_cause_an_import(tmp_path, monkeypatch, where, spec):
    """The SHA-256 header is an integrity check, not a signature: anyone can write a valid file.
    Its config names a module sitting in the working directory; loading must not import it."""
    train(tmp_path / "run", ss.VPSDE(), steps=6)
    (tmp_path / "evil_mod.py").write_text(EVIL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000006.ckpt")
    config = json.loads(state["config_json"])
    config["model"][where] = spec
    crafted = tmp_path / "crafted.ckpt"
    save_checkpoint({**state, "config_json": json.dumps(config)}, crafted)  # a valid digest
    with pytest.raises(CheckpointError):
        ss.load_run(crafted)
    assert not (tmp_path / "IMPORTED").exists() and "evil_mod" not in sys.modules


def test_safetensors_export_reads_back_with_the_config_as_metadata(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    trainer = train(tmp_path / "run", ss.VPSDE(schedule="cosine"))
    run = ss.load_run(tmp_path / "run")
    out = run.save_safetensors(tmp_path / "w.safetensors")
    tensors = load_file(str(out))
    ema = trainer.ema.model.state_dict()
    assert tensors.keys() == ema.keys() and all(torch.equal(tensors[k], ema[k]) for k in ema)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "scoresde" and meta["weights"] == "ema" and meta["step"] == "12"
    assert json.loads(meta["config"])["model"]["sde"]["kwargs"]["schedule"] == "cosine"
    again = ss.load_run(out)  # the export is a run too
    assert again.step == 12 and torch.equal(scores(again.model), scores(trainer.ema.model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "w.safetensors"]  # written atomically
    with pytest.raises(CheckpointError, match="holds the ema weights only; pass ema=True"):
        ss.load_run(out, ema=False)
    (tmp_path / "other.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ss.load_run(tmp_path / "other.safetensors")


def test_bad_arguments_are_named(tmp_path):
    train(tmp_path, ss.VPSDE(), steps=6)
    with pytest.raises(ss.ArgumentError, match="device"):
        ss.load_run(tmp_path, device="tpu:7")
    with pytest.raises(ss.ArgumentError, match="ema must be True or False"):
        ss.load_run(tmp_path, ema=1)
    with pytest.raises(ss.ArgumentError, match="sde must be a scoresde.SDE"):
        ss.load_run(tmp_path, sde="vp")
    with pytest.raises(ss.ArgumentError, match="model must be a torch.nn.Module"):
        ss.load_run(tmp_path, model=Path("x"))
