"""The run folder's rules (training/run_folder.py) as the Trainer applies them: check before writing,
no links followed, one writer at a time, no mixing of runs, a resumed run is the same run."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import scoresde as ss
from scoresde.training import (
    CheckpointError,
    DSMLoss,
    Trainer,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX links and flock")


def make(out_dir=None, hidden=16, **kw):
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 300, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, hidden, 1), sde, data_std=4.0)
    opts = dict(steps=20, batch_size=32, lr=1e-3, warmup_steps=5, log_every=5, checkpoint_every=10, progress=False)
    opts.update(kw)
    return Trainer(model, DSMLoss(sde, "likelihood"), data, out_dir, **opts)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*"))}


def steps(path: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader(open(path))]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_construction_writes_nothing(tmp_path):
    make(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_folder_that_holds_a_run_is_refused_without_touching_it(tmp_path):
    """Training anew into a run folder used to overwrite step_20, keep the old 40 and 60 (which
    `sample` then loaded) and interleave metrics.csv."""
    make(tmp_path, steps=60, checkpoint_every=20).fit()
    before = snapshot(tmp_path)
    with pytest.raises(ss.RunFolderError, match=r"already holds a run \(config.json, metrics.csv, 3 checkpoint\(s\) up "
                                                r"to step 60\); continue it with Trainer.resume\(\)"):
        make(tmp_path, steps=20).fit()
    with pytest.raises(ss.RunFolderError, match="already holds a run"):
        make(tmp_path).start()
    assert snapshot(tmp_path) == before
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [20, 40, 60]
    assert steps(tmp_path / "metrics.csv") == list(range(5, 65, 5))


def test_a_folder_with_unrelated_files_or_an_empty_one_is_fine(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoints").mkdir()
    make(tmp_path, steps=10).fit()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [10]


@pytest.mark.parametrize("change, message", [
    ({"lr": 0.05}, r"train.lr: 0.001 -> 0.05"),
    ({"hidden": 32}, r"model.net.kwargs.hidden: 16 -> 32"),
    ({"lr_schedule": "cosine", "steps": 40}, r"train.lr_schedule: 'constant' -> 'cosine'"),
    ({"seed": 5}, r"train.seed: 0 -> 5"),
])
def test_resume_with_a_changed_config_refuses_and_loses_nothing(tmp_path, change, message):
    """It used to skip every checkpoint behind warnings, restart at step 0 and overwrite them; a
    changed lr was silently ignored (the optimizer's state kept the old one)."""
    make(tmp_path, steps=20).fit()
    before = snapshot(tmp_path)
    trainer = make(tmp_path, **{"steps": 20, **change})
    with pytest.raises(ss.RunFolderError, match=f"cannot resume run folder .*with another configuration: .*{message}.*only progress, log_every"):
        trainer.resume()
    assert trainer.step == 0
    assert snapshot(tmp_path) == before  # every file, byte for byte, and no new one


def test_resume_with_steps_under_a_cosine_schedule_refuses(tmp_path):
    make(tmp_path, steps=20, lr_schedule="cosine").fit()
    with pytest.raises(ss.RunFolderError, match=r"train.steps: 20 -> 30"):
        make(tmp_path, steps=30, lr_schedule="cosine").resume()


def test_resume_may_change_what_changes_no_update_and_records_it(tmp_path):
    full = make(None, steps=30, log_every=3).fit()
    make(tmp_path, steps=20).fit()
    resumed = make(tmp_path, steps=30, log_every=3, checkpoint_every=15, keep_checkpoints=5)
    assert resumed.resume() == 20
    resumed.fit()
    torch.testing.assert_close(resumed.model.state_dict(), full.model.state_dict(), rtol=0, atol=0)
    recorded = json.loads((tmp_path / "config.json").read_text())["train"]
    assert (recorded["steps"], recorded["log_every"], recorded["keep_checkpoints"]) == (30, 3, 5)
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000030.ckpt")
    assert json.loads(state["config_json"])["train"]["steps"] == 30
    assert steps(tmp_path / "metrics.csv") == [5, 10, 15, 20, 21, 24, 27, 30]


class Net(torch.nn.Module):
    """A network without a config: a change of architecture shows only in the weights."""

    def __init__(self, hidden):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, hidden), torch.nn.Linear(hidden, 2)

    def forward(self, x, c):
        return self.b(torch.tanh(self.a(torch.cat([x, c[:, None]], 1))))


def test_resume_with_weights_of_another_architecture_refuses_in_one_line(tmp_path):
    sde = ss.VPSDE()
    data = torch.randn(64, 2)

    def trainer(hidden):
        torch.manual_seed(0)
        return Trainer(ss.ScoreModel(Net(hidden), sde), DSMLoss(sde), data, tmp_path, steps=10, batch_size=16,
                       progress=False)

    trainer(8).fit()
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as err:
        trainer(16).resume()
    assert "\n" not in str(err.value)
    assert "weights of another architecture" in str(err.value) and "net.a.weight (8, 3) vs (16, 3)" in str(err.value)
    assert snapshot(tmp_path) == before


def test_a_damaged_newest_checkpoint_is_skipped_but_another_format_version_refuses(tmp_path):
    make(tmp_path, steps=20).fit()
    newest = tmp_path / "checkpoints" / "step_00000020.ckpt"
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match="skipping checkpoint at step 20"):
        assert make(tmp_path, steps=20).resume() == 10
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000010.ckpt")
    save_checkpoint({**state, "format_version": 99}, newest)
    with pytest.raises(CheckpointError, match=r"format_version 99, newer than this scoresde reads \(2\)"):
        make(tmp_path, steps=20).resume()


@posix_only
@pytest.mark.parametrize("name, kind", [
    ("metrics.csv", "file"), ("eval.csv", "file"), ("config.json", "file"), (".lock", "file"),
    ("checkpoints", "dir"), ("tensorboard", "dir"), ("checkpoints/step_00000010.ckpt", "file"),
])
def test_links_planted_in_a_run_folder_are_refused_not_followed(tmp_path, name, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True) if name.startswith("checkpoints/") else run.mkdir()
    (run / name).symlink_to(victim if kind == "file" else outside)
    with pytest.raises(ss.RunFolderError, match=f"{Path(name).name}' in run folder .* is a symbolic link"):
        make(run, steps=10, eval_every=5, eval_fn=lambda tr: {"x": 1.0}).fit()
    with pytest.raises(ss.RunFolderError, match="is a symbolic link"):
        make(run, steps=10).resume()
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and victim.read_text() == "precious"


@posix_only
def test_predictable_temporary_names_planted_as_links_are_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    pid = os.getpid()
    for step in (10, 20):  # the names the old writer used: .<name>.tmp-<pid>
        (run / "checkpoints" / f".step_{step:08d}.ckpt.tmp-{pid}").symlink_to(victim)
    (run / f".config.json.tmp-{pid}").symlink_to(victim)
    make(run, steps=20).fit()
    assert victim.read_text() == "precious"
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [10, 20]


@posix_only
def test_a_run_folder_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ss.RunFolderError, match="is a file, not a folder"):
        make(tmp_path / "f").fit()
    with pytest.raises(ss.RunFolderError, match="part of its path is a file"):
        make(tmp_path / "f" / "run").fit()
    assert (tmp_path / "f").read_text() == "x"


def test_temporaries_left_by_killed_writers_are_removed_once_the_lock_is_held(tmp_path):
    make(tmp_path, steps=10).fit()
    dead, alive = dead_pid(), os.getppid()
    stale = [tmp_path / "checkpoints" / f".step_00000020.ckpt.tmp-{dead}-a1b2c3",  # a SIGKILL mid-checkpoint
             tmp_path / "checkpoints" / f".step_00000030.ckpt.tmp-{alive}-d4e5f6",  # the run's own file: ours now
             tmp_path / f".metrics.csv.tmp-{dead}-0f0f0f",
             tmp_path / f".samples.npz.tmp-{dead}-123abc"]  # a dead CLI writer's output
    kept = tmp_path / f".samples.npz.tmp-{alive}-456def"  # another live process's output: not ours to remove
    for p in [*stale, kept]:
        p.write_bytes(b"\0" * 1000)
    assert make(tmp_path, steps=20).resume() == 10
    assert not any(p.exists() for p in stale) and kept.exists()


LOCK_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from pathlib import Path
    import scoresde as ss
    torch.set_num_threads(1)
    out, signal_dir = Path(sys.argv[1]), Path(sys.argv[2])
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 300, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 16, 1), sde, data_std=4.0)

    def hold(trainer):  # at step 5: say so, then wait until the test has tried its second run
        if trainer.step == 5:
            (signal_dir / "waiting").write_text("")
            deadline = time.time() + 120
            while not (signal_dir / "go").exists() and time.time() < deadline:
                time.sleep(0.02)
        return {}

    ss.Trainer(model, ss.DSMLoss(sde, "likelihood"), data, out, steps=20, batch_size=32, lr=1e-3, warmup_steps=5,
               log_every=5, checkpoint_every=10, eval_every=1, eval_fn=hold, progress=False).fit()
    print("first run done", flush=True)
    """
)


@posix_only
def test_a_second_training_in_a_folder_in_use_fails_and_the_first_is_intact(tmp_path, capsys):
    run, sig = tmp_path / "run", tmp_path / "signals"
    sig.mkdir()
    script = tmp_path / "first.py"
    script.write_text(LOCK_SCRIPT)
    first = subprocess.Popen([sys.executable, str(script), str(run), str(sig)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (sig / "waiting").exists():
            assert first.poll() is None and time.time() < deadline, "the first run ended before it could be joined"
            time.sleep(0.02)
        for attempt in (lambda tr: tr.fit(), lambda tr: tr.resume(), lambda tr: tr.start()):
            with pytest.raises(ss.RunFolderError, match=r"run folder .* is in use: another process is training in it"):
                attempt(make(run, steps=20))
        from scoresde.cli import main

        assert main(["train", "train.steps=20", "train.progress=false", "--out", str(run), "--resume"]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and "is in use" in err[0]
    finally:
        (sig / "go").write_text("")
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "first run done" in out
    assert steps(run / "metrics.csv") == [5, 10, 15, 20]  # the first run's rows only, once
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [10, 20]
    # the lock died with its process: the folder can be resumed now
    assert make(run, steps=20).resume() == 20


def test_in_one_process_a_finished_fit_frees_the_folder(tmp_path):
    part = make(tmp_path, steps=20)
    part.fit(steps=10)
    assert make(tmp_path, steps=20).resume() == 10  # the first trainer released the lock when fit returned
    with pytest.raises(ss.RunFolderError, match="changed since this trainer last wrote"):
        # meanwhile another trainer resumed and moved on: this one must not write over its run
        other = make(tmp_path, steps=20)
        other.resume()
        other.fit()
        part.fit()


def test_config_differences_allow_exactly_what_changes_no_update():
    from scoresde.training.run_folder import config_differences

    base = {"format_version": 2, "world_size": 2, "train": {"lr": 2e-4, "steps": 100, "lr_schedule": "constant",
                                                           "log_every": 50, "betas": [0.9, 0.999]},
            "model": {"net": {"name": "MLP", "kwargs": {"hidden": 32}}}, "metadata": {}}
    same_run = {**base, "world_size": 4, "train": {**base["train"], "steps": 200, "log_every": 5, "betas": (0.9, 0.999)}}
    assert config_differences(base, same_run) == []  # more processes, more steps (constant lr), other logging
    cosine = {**base, "train": {**base["train"], "lr_schedule": "cosine"}}
    assert config_differences(cosine, {**cosine, "train": {**cosine["train"], "steps": 200}}) == ["train.steps: 100 -> 200"]
    other = {**base, "train": {**base["train"], "lr": 0.05}, "model": {"net": {"name": "MLP", "kwargs": {"hidden": 64}}},
             "metadata": {"cli": {"data": "ring"}}}
    assert config_differences(base, other) == ["train.lr: 0.0002 -> 0.05", "model.net.kwargs.hidden: 32 -> 64",
                                               "metadata.cli: (absent) -> {'data': 'ring'}"]
