"""Trainer: logs, checkpoints, reproducibility, resume, schedule, EMA, and bad input."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import scoresde as ss
from scoresde.training import (
    EMA,
    CheckpointError,
    DSMLoss,
    Trainer,
    TrainingDivergedError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def make(out_dir=None, seed=0, data=None, loss=None, model_seed=0, **kw):
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture()
    data = ss.MixtureDataset(gmm, 300, seed=0) if data is None else data
    torch.manual_seed(model_seed)
    model = ss.ScoreModel(ss.MLP(2, 16, 1), sde, data_std=4.0)
    opts = dict(steps=20, batch_size=32, lr=1e-3, warmup_steps=5, log_every=5, checkpoint_every=10,
                progress=False, seed=seed)
    opts.update(kw)
    return Trainer(model, loss or DSMLoss(sde, "likelihood"), data, out_dir, **opts)


def same_state(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def weights(tr):
    sd = tr.state_dict()
    return {k: sd[k] for k in ("model", "ema", "optimizer", "scheduler", "data", "step")}


def test_fit_writes_config_logs_and_verified_checkpoints(tmp_path):
    tr = make(tmp_path, steps=25, keep_checkpoints=2)
    tr.fit()
    assert tr.step == 25
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["steps"] == 25 and cfg["model"]["parameterization"] == "eps"
    assert cfg["loss"]["weighting"] == "likelihood" and cfg["data"] == {"type": "MixtureDataset", "size": 300, "shape": [2]}
    assert cfg["model"]["net"] == {"name": "MLP", "kwargs": tr.model.net.config}  # rebuildable specs
    assert cfg["model"]["sde"] == {"name": "VPSDE", "kwargs": ss.VPSDE().spec()}
    assert cfg["format_version"] == ss.training.FORMAT_VERSION
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25]
    assert all(math.isfinite(float(r["loss"])) and float(r["lr"]) > 0 for r in rows)
    # steps 10 and 20 by checkpoint_every, 25 at the end; only the newest two are kept
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [20, 25]
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000025.ckpt")
    assert state["step"] == 25 and json.loads(state["config_json"])["train"]["seed"] == 0
    for key in ("model", "ema", "optimizer", "scheduler", "rng", "data"):
        assert key in state
    assert same_state(state["model"], tr.model.state_dict())
    assert not any(p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir())  # no temp files left


def test_checkpoint_payload_is_weights_only_loadable(tmp_path):
    path = save_checkpoint({"a": torch.arange(3), "cfg": "{}", "n": 4}, tmp_path / "x.ckpt")
    raw = path.read_bytes()
    import io
    payload = raw[raw.index(b"\n", len(b"SCORESDE-CKPT v1\n")) + 1 :]
    state = torch.load(io.BytesIO(payload), weights_only=True)
    assert torch.equal(state["a"], torch.arange(3)) and state["n"] == 4


def test_same_seed_same_weights_different_seed_different():
    a, b, c = make(seed=1).fit(), make(seed=1).fit(), make(seed=2).fit()
    assert same_state(weights(a), weights(b))
    assert not same_state(a.model.state_dict(), c.model.state_dict())


def test_resume_in_process_is_bit_identical(tmp_path):
    full = make(None, steps=30).fit()
    part = make(tmp_path, steps=30)
    part.fit(steps=17)  # writes checkpoints at 10 and (end of this call) 17
    resumed = make(tmp_path, steps=30)
    assert resumed.resume() == 17
    resumed.fit()
    assert same_state(weights(full), weights(resumed))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 17, 20, 25, 30]


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    import scoresde as ss
    torch.set_num_threads(1)
    out, mode = sys.argv[1], sys.argv[2]
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 500, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 32, 2), sde, data_std=4.0)

    def slow_eval(trainer):  # paces the run so that the parent can kill it mid-way
        time.sleep(0.03)
        return {"probe": float(torch.randn(()))}  # also draws from the global RNG

    tr = ss.Trainer(model, ss.DSMLoss(sde, "likelihood"), data, out, steps=150, batch_size=64, lr=1e-3,
                    warmup_steps=20, lr_schedule="cosine", checkpoint_every=10, eval_every=1,
                    eval_fn=slow_eval, progress=False, seed=3)
    if mode == "resume":
        print("resumed from", tr.resume(), flush=True)
    tr.fit()
    sd = tr.state_dict()
    torch.save({k: sd[k] for k in ("model", "ema", "optimizer", "scheduler", "data", "step")}, out + "/final.pt")
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, script, straight, "fresh"], check=True, env=env, timeout=300)

    proc = subprocess.Popen([sys.executable, script, killed, "fresh"], env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not any(s >= 40 for s, _ in list_checkpoints(killed / "checkpoints")):
        time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    steps_done = [s for s, _ in list_checkpoints(killed / "checkpoints")]
    assert 40 <= max(steps_done) < 150 and not (killed / "final.pt").exists()

    out = subprocess.run([sys.executable, script, killed, "resume"], check=True, env=env, timeout=300,
                         capture_output=True, text=True)
    assert f"resumed from {max(steps_done)}" in out.stdout
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert a["step"] == b["step"] == 150
    assert same_state(a, b)  # model, EMA, optimizer moments, scheduler and data order: bit for bit
    evals = list(csv.DictReader(open(killed / "eval.csv")))
    assert [int(r["step"]) for r in evals] == list(range(1, 151))  # rows past the checkpoint were redone once


def test_truncated_or_tampered_checkpoint_is_rejected_and_previous_survives(tmp_path):
    tr = make(tmp_path, steps=20)
    tr.fit()
    ckpts = dict(list_checkpoints(tmp_path / "checkpoints"))
    good, newest = ckpts[10], ckpts[20]
    raw = newest.read_bytes()

    newest.write_bytes(raw[: len(raw) // 2])  # truncated, as by a crash mid-copy
    with pytest.raises(CheckpointError, match="step_00000020.ckpt.*corrupt"):
        load_checkpoint(newest)
    tampered = bytearray(raw)
    tampered[-100] ^= 0xFF
    newest.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="does not match the recorded SHA-256"):
        load_checkpoint(newest)
    newest.write_bytes(raw[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(newest)
    (tmp_path / "other.ckpt").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointError, match="not a scoresde checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")

    assert load_checkpoint(good)["step"] == 10  # the previous checkpoint is intact
    fresh = make(tmp_path, steps=20)
    with pytest.warns(UserWarning, match="skipping checkpoint at step 20"):
        assert fresh.resume() == 10


def test_checkpoint_from_another_model_is_a_clear_error(tmp_path):
    make(tmp_path, steps=10).fit()
    sde = ss.VPSDE()
    other = Trainer(ss.ScoreModel(ss.MLP(2, 8, 1), sde, data_std=4.0), DSMLoss(sde, "likelihood"),
                    ss.MixtureDataset(ss.analytic.ring_mixture(), 300, seed=0), tmp_path / "b", steps=10, batch_size=32,
                    lr=1e-3, warmup_steps=5, log_every=5, checkpoint_every=10, progress=False)
    with pytest.raises(CheckpointError, match=r"written with another configuration: model.net.kwargs.hidden: 16 -> 8$"):
        other.load(tmp_path / "checkpoints" / "step_00000010.ckpt")
    # the same config but other weights (a state dict of another model): one line, not a state_dict dump
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000010.ckpt")
    state["model"] = ss.ScoreModel(ss.MLP(2, 8, 1), sde).state_dict()
    with pytest.raises(CheckpointError) as err:
        make(tmp_path / "c", steps=10).load_state_dict(state, source="that file")
    assert "\n" not in str(err.value) and str(err.value).startswith("that file holds the weights of another architecture")


class DropoutNet(torch.nn.Module):
    """A score network with dropout: its masks come from the global RNG."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = torch.nn.Linear(3, 32), torch.nn.Linear(32, 2)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, c):
        return self.out(self.drop(torch.nn.functional.silu(self.inp(torch.cat([x, c[:, None]], 1)))))


def test_resume_restores_the_global_rng(tmp_path):
    """Dropout draws from the global RNG: a resumed run must continue its stream, whatever the
    process did with the RNG in between, to equal the uninterrupted run bit for bit."""

    def trainer(out):
        sde = ss.VPSDE()
        torch.manual_seed(0)
        model = ss.ScoreModel(DropoutNet(), sde, data_std=4.0)
        return Trainer(model, DSMLoss(sde), ss.MixtureDataset(ss.analytic.ring_mixture(), 300, seed=0), out,
                       steps=30, batch_size=32, lr=1e-3, warmup_steps=5, checkpoint_every=10, progress=False)

    full = trainer(None).fit()
    trainer(tmp_path).fit(steps=17)
    resumed = trainer(tmp_path)
    torch.rand(1000)  # the global RNG moves on between the interruption and the resumption
    assert resumed.resume() == 17
    resumed.fit()
    assert same_state(weights(full), weights(resumed))


def test_every_epoch_draws_a_new_permutation():
    tr = make(data=torch.randn(10, 2), batch_size=5)
    epochs = [tr.batches.indices(10) for _ in range(3)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(10))  # each epoch visits every sample once
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    again = make(data=torch.randn(10, 2), batch_size=5)  # and the order is the seed's
    assert all(torch.equal(a, again.batches.indices(10)) for a in epochs)


FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import resource, signal, sys, torch
    import scoresde as ss
    torch.set_num_threads(1)
    out, mode = sys.argv[1], sys.argv[2]
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 300, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 32, 2), sde, data_std=4.0)

    def fill_disk(trainer):  # after step 15 a file may grow to 4 KB only: the next checkpoint fails half-way
        if mode == "full" and trainer.step == 15:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        return {}

    tr = ss.Trainer(model, ss.DSMLoss(sde, "likelihood"), data, out, steps=30, batch_size=32, lr=1e-3,
                    warmup_steps=5, log_every=5, checkpoint_every=10, eval_every=5, eval_fn=fill_disk, progress=False)
    if mode == "resume":
        print("resumed from", tr.resume(), flush=True)
    try:
        tr.fit()
    except OSError as err:
        print("stopped:", err.errno, flush=True)
        sys.exit(3)
    sd = tr.state_dict()
    torch.save({k: sd[k] for k in ("model", "ema", "optimizer", "scheduler", "data", "step")}, out + "/final.pt")
    """
)


@pytest.mark.skipif(os.name != "posix", reason="needs RLIMIT_FSIZE")
def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resumes_exactly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(FULL_DISK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight, full = tmp_path / "straight", tmp_path / "full"
    subprocess.run([sys.executable, script, straight, "fresh"], check=True, env=env, timeout=300)
    proc = subprocess.run([sys.executable, script, full, "full"], env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 3 and "stopped: 27" in proc.stdout, proc.stdout + proc.stderr  # EFBIG at step 20
    assert [s for s, _ in list_checkpoints(full / "checkpoints")] == [10]
    assert load_checkpoint(full / "checkpoints" / "step_00000010.ckpt")["step"] == 10  # intact
    assert not [p.name for p in full.rglob("*") if ".tmp-" in p.name]  # the failed write left no temporary
    out = subprocess.run([sys.executable, script, full, "resume"], check=True, env=env, timeout=300,
                         capture_output=True, text=True)
    assert "resumed from 10" in out.stdout
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(full / "final.pt", weights_only=True)
    assert same_state(a, b)


def test_nan_loss_stops_names_the_step_and_keeps_last_good_checkpoint(tmp_path):
    sde = ss.VPSDE()
    dsm = DSMLoss(sde)
    calls = {"n": 0}

    def flaky(model, x0, generator):
        calls["n"] += 1
        out = dsm(model, x0, generator)
        return out * float("nan") if calls["n"] == 13 else out

    tr = make(tmp_path, steps=20, loss=flaky)
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 13 .*step_00000010\.ckpt"):
        tr.fit()
    assert tr.step == 12
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [10]
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000010.ckpt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="data is empty"):
        make(data=torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"model rejects the data: a batch of shape \(2, 3\)"):
        make(data=torch.randn(10, 3))
    with pytest.raises(ValueError, match="floating-point"):
        make(data=torch.randint(0, 5, (10, 2)))
    with pytest.raises(ValueError, match="map-style"):
        make(data=iter([torch.zeros(2)]))
    with pytest.raises(ValueError, match="amp=True needs a CUDA device"):
        make(amp=True)
    with pytest.raises(ValueError, match="lr must be a positive finite number, got 0"):
        make(lr=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        make(batch_size=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        make(lr_schedule="step")
    with pytest.raises(ss.ArgumentError, match="unknown Trainer option 'learning_rate'; valid options are: steps"):
        make(learning_rate=1e-3)  # unknown options are not silently ignored
    with pytest.raises(ValueError, match="out_dir is None"):
        make().save()


def test_generic_dataset_with_labels_and_tiny_data():
    class Pairs(torch.utils.data.Dataset):
        def __init__(self):
            self.x = torch.randn(5, 2)

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return self.x[i], i % 2

    tr = make(data=Pairs(), batch_size=12, steps=3)  # batch larger than the data set: epochs chain
    tr.fit()
    assert tr.step == 3


def test_warmup_and_cosine_schedule_and_grad_clipping(tmp_path):
    tr = make(tmp_path, steps=40, lr=1e-2, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1,
              grad_clip=1e-3, log_every=1)
    lrs, norms = [], []
    for _ in range(40):
        lrs.append(tr.optimizer.param_groups[0]["lr"])
        _, gnorm = tr.train_step()  # the pre-clipping norm; the gradients stay until the next step
        clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in tr.model.parameters()]))
        norms.append((float(gnorm), float(clipped)))
    want = [1e-2 * min(1, (s + 1) / 10) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 40))) for s in range(40)]
    assert lrs == pytest.approx(want, rel=1e-12)
    assert all(raw > 1e-3 and clipped <= 1e-3 * (1 + 1e-5) for raw, clipped in norms)


def test_ema_update_rule():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # first decay: min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.model.weight, 0.1 * w0 + 0.9 * (w0 + 1))
    for _ in range(200):
        ema.update(net)
    torch.testing.assert_close(ema.model.weight, w0 + 1, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_eval_hook_runs_every_n_steps_and_is_logged(tmp_path):
    seen = []

    def hook(trainer):
        seen.append(trainer.step)
        assert not trainer.model.training
        return {"ema_norm": sum(float(p.norm()) for p in trainer.ema.model.parameters())}

    make(tmp_path, steps=20, eval_every=5, eval_fn=hook).fit()
    assert seen == [5, 10, 15, 20]
    rows = list(csv.DictReader(open(tmp_path / "eval.csv")))
    assert [int(r["step"]) for r in rows] == seen and all(float(r["ema_norm"]) > 0 for r in rows)


def test_progress_bar_and_tensorboard_option(tmp_path, capsys):
    make(tmp_path, steps=5, progress=True).fit()
    assert "training" in capsys.readouterr().err
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="tensorboard package is not installed"):
            make(tmp_path / "tb", steps=5, tensorboard=True).fit()
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        make(tmp_path / "tb", steps=5, tensorboard=True).fit()
        events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
        events.Reload()
        assert {"metrics/loss", "metrics/grad_norm", "metrics/lr"} <= set(events.Tags()["scalars"])
        assert events.Scalars("metrics/loss")[-1].step == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda(tmp_path):
    for dtype in ("bfloat16", "float16"):
        tr = make(tmp_path / dtype, steps=20, amp=True, amp_dtype=dtype, device="cuda")
        tr.fit()
        assert all(torch.isfinite(p).all() for p in tr.model.parameters())
        assert load_checkpoint(tr.last_checkpoint, map_location="cuda")["step"] == 20
