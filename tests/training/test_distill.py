"""Progressive distillation (scoresde.training.distillation): the target against exact answers, the
rounds on the Trainer, bit-identical resume after SIGKILL, the argument checks, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as ss
from scoresde.cli import main
from scoresde.training.checkpoint import list_checkpoints, load_checkpoint
from scoresde.training.distillation import DistillationLoss, distillation_grid

ROOT = Path(__file__).resolve().parents[2]
SDE = ss.VPSDE()
M, S = 1.5, 0.5  # the one-Gaussian data N(M, S^2) in each dimension


def gaussian():
    return ss.analytic.GaussianMixture(torch.full((1, 2), M, dtype=torch.float64),
                                       torch.full((1, 2), S, dtype=torch.float64), torch.ones(1, dtype=torch.float64))


def posterior_mean(x, t):
    """E[x_0 | x_t] for x_0 ~ N(M, S^2) under VP, written out: M + a S^2 (x - a M) / (a^2 S^2 + s^2)."""
    a, s = SDE.marginal(torch.as_tensor(t, dtype=torch.float64))
    return M + a * S**2 * (x - a * M) / (a**2 * S**2 + s**2)


def ddim_by_hand(x, t, t2):
    a, s = SDE.marginal(torch.as_tensor(t, dtype=torch.float64))
    a2, s2 = SDE.marginal(torch.as_tensor(t2, dtype=torch.float64))
    return s2 / s * x + (a2 - s2 / s * a) * posterior_mean(x, t)


TIMES = [1.0, 0.7, 0.45, 0.2, 0.05]  # a teacher grid of 4 steps: the student takes 1.0 -> 0.45 -> 0.05


# ---- the target --------------------------------------------------------------------------------
def test_target_is_the_x0_whose_one_step_lands_on_two_teacher_steps():
    loss = DistillationLoss(gaussian().score_fn(SDE), SDE, TIMES)
    assert loss.K == 2 and loss.student_times.tolist() == [1.0, 0.45, 0.05]
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = torch.tensor([0] * 32 + [1] * 32)
    target = loss.target(x, idx)
    for i, rows in ((0, slice(0, 32)), (1, slice(32, 64))):
        t, tm, t2 = TIMES[2 * i], TIMES[2 * i + 1], TIMES[2 * i + 2]
        two = ddim_by_hand(ddim_by_hand(x[rows], t, tm), tm, t2)
        a, s = SDE.marginal(torch.tensor(t, dtype=torch.float64))
        a2, s2 = SDE.marginal(torch.tensor(t2, dtype=torch.float64))
        by_hand = (two - s2 / s * x[rows]) / (a2 - s2 / s * a)
        torch.testing.assert_close(target[rows], by_hand, rtol=1e-12, atol=1e-12)
        # the library's DDIM: two steps on [t, tm, t2] land where one step with the target lands
        lib_two = ss.sample(gaussian().score_fn(SDE), SDE, (32, 2), sampler="ddim", grid=[t, tm, t2],
                            x_start=x[rows], denoise=False).x
        one = s2 / s * x[rows] + (a2 - s2 / s * a) * target[rows]
        torch.testing.assert_close(one, lib_two, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lib_two, two, rtol=1e-12, atol=1e-12)


def test_denoising_index_targets_the_teachers_tweedie_step():
    loss = DistillationLoss(gaussian().score_fn(SDE), SDE, TIMES)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = loss.target(x, torch.full((16,), loss.K))
    torch.testing.assert_close(target, posterior_mean(x, TIMES[-1]), rtol=1e-12, atol=1e-12)
    assert not DistillationLoss(gaussian().score_fn(SDE), SDE, TIMES, denoise=False).config["denoise"]


def test_student_equal_to_its_teacher_has_the_one_vs_two_step_discrepancy_as_loss():
    teacher = gaussian().score_fn(SDE)
    loss = DistillationLoss(teacher, SDE, TIMES)
    x0 = M + S * torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    idx, xt = loss.draw(x0, torch.Generator().manual_seed(5))
    losses = loss(teacher, x0, torch.Generator().manual_seed(5))  # the same draws
    assert set(idx.tolist()) == {0, 1, 2}  # uniform over the K steps and the denoising index
    assert abs(float((idx == 2).double().mean()) - 1 / 3) < 0.03
    for i in range(loss.K):
        rows = idx == i
        t, tm, t2 = TIMES[2 * i], TIMES[2 * i + 1], TIMES[2 * i + 2]
        one = ddim_by_hand(xt[rows], t, t2)
        two = ddim_by_hand(ddim_by_hand(xt[rows], t, tm), tm, t2)
        a, s = SDE.marginal(torch.tensor(t, dtype=torch.float64))
        a2, s2 = SDE.marginal(torch.tensor(t2, dtype=torch.float64))
        expected = max(float(a**2 / s**2), 1.0) * (two - one).square().sum(1) / float(a2 - s2 / s * a) ** 2
        torch.testing.assert_close(losses[rows], expected, rtol=1e-10, atol=1e-14)
        assert float(expected.min()) > 0  # the two-step map differs from the one-step one
    assert float(losses[idx == 2].abs().max()) < 1e-20  # the teacher's own denoising step: no error


def test_score_model_x0_is_read_from_its_network_not_through_the_score():
    from scoresde.training.distillation import _data_x0

    torch.manual_seed(0)
    for param in ("x0", "v", "eps"):
        model = ss.ScoreModel(ss.MLP(2, 16, 1), SDE, param, data_std=2.0).double()
        x = torch.randn(8, 2, dtype=torch.float64)
        t = torch.full((8,), 0.6, dtype=torch.float64)
        with torch.no_grad():
            via_score = SDE.to_x0(model(x, t), x, t, "score")
            torch.testing.assert_close(_data_x0(model, x, t, SDE), via_score, rtol=1e-9, atol=1e-9)


# ---- the rounds ----------------------------------------------------------------------------------
def small_student(seed=0):
    torch.manual_seed(seed)
    return ss.ScoreModel(ss.MLP(2, 32, 2), SDE, "x0", data_std=1.5)


def gaussian_data(n=4000):
    return M + S * torch.randn(n, 2, generator=torch.Generator().manual_seed(3))


TRAIN = dict(batch_size=128, lr=3e-3, warmup_steps=20, ema_decay=0.9, progress=False, seed=1)


def test_distilled_student_plugs_into_sample_and_beats_ddim_at_its_steps():
    gmm = ss.analytic.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5]]), torch.full((2, 2), 0.3),
                                      torch.tensor([0.5, 0.5]))  # two modes: DDIM's few steps err
    exact = gmm.score_fn(SDE)
    data = gmm.sample(4000, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    student = ss.ScoreModel(ss.MLP(2, 32, 2), SDE, "x0", data_std=2.0)
    res = ss.distill(exact, SDE, data, steps=4, rounds=1, student=student, train_steps=800,
                     **{**TRAIN, "lr": 3e-3})
    assert len(res.students) == 1 and res.students[0].steps == 2
    torch.testing.assert_close(res.grid, distillation_grid(SDE, 2), rtol=0, atol=0)
    torch.testing.assert_close(res.teacher_grid, distillation_grid(SDE, 4), rtol=0, atol=0)
    assert not res.student.training and not any(p.requires_grad for p in res.student.parameters())
    x_T = SDE.prior_sample((500, 2), generator=torch.Generator().manual_seed(9))
    run = dict(x_start=x_T, denoise=False)
    s_ddim = ss.sample(res.student, SDE, (500, 2), sampler="ddim", grid=res.grid, **run)
    s_dpm = ss.sample(res.student, SDE, (500, 2), sampler="dpm_solver", order=1, grid=res.grid, **run)
    assert s_ddim.nfe == s_dpm.nfe == 2
    torch.testing.assert_close(s_ddim.x, s_dpm.x, rtol=1e-5, atol=1e-5)
    target = ss.sample(exact, SDE, (500, 2), sampler="ddim", grid=res.teacher_grid, **run).x  # what it distils
    ddim2 = ss.sample(exact, SDE, (500, 2), sampler="ddim", grid=res.grid, **run).x
    err_student = float((s_ddim.x - target).norm(dim=1).mean())
    err_ddim = float((ddim2 - target).norm(dim=1).mean())
    assert err_student < 0.4 * err_ddim, (err_student, err_ddim)  # measured 0.027 vs 0.156
    # with the final denoising step (the CLI's default): one more evaluation, still on the teacher
    denoised = ss.sample(res.student, SDE, (500, 2), sampler="ddim", grid=res.grid, x_start=x_T)
    teacher_denoised = ss.sample(exact, SDE, (500, 2), sampler="ddim", grid=res.teacher_grid, x_start=x_T).x
    assert denoised.nfe == 3
    assert float((denoised.x - teacher_denoised).norm(dim=1).mean()) < 0.5 * err_ddim


def test_rounds_halve_the_grid_start_from_their_teacher_and_resume(tmp_path):
    teacher = small_student(seed=4)  # a network teacher: round 1 starts from its weights
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = gaussian_data(1000)
    res = ss.distill(teacher, SDE, data, steps=8, rounds=2, out_dir=tmp_path, train_steps=[40, 30], **TRAIN)
    assert teacher.training and all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    full = distillation_grid(SDE, 8)
    assert [s.steps for s in res.students] == [4, 2]
    assert torch.equal(res.students[0].grid, full[::2]) and torch.equal(res.students[1].grid, full[::4])
    assert [(r.round, r.teacher_steps, r.student_steps, r.train_steps, r.resumed_from) for r in res.rounds] == \
        [(1, 8, 4, 40, 0), (2, 4, 2, 30, 0)]
    assert all(r.seconds > 0 for r in res.rounds) and res.rounds[0].path == tmp_path / "round_1"
    buffers = {k for k, _ in teacher.named_buffers()}  # fixed Fourier frequencies
    assert not any(torch.equal(v, before[k]) for k, v in res.student.state_dict().items() if k not in buffers)
    # each round starts from its teacher: with a negligible learning rate every student is the teacher
    still = ss.distill(teacher, SDE, data, steps=8, rounds=2, train_steps=5, **{**TRAIN, "lr": 1e-12})
    for s in still.students:
        for k, v in s.model.state_dict().items():
            torch.testing.assert_close(v, before[k], rtol=0, atol=1e-9)
    for r in (1, 2):
        cfg = json.loads((tmp_path / f"round_{r}" / "config.json").read_text())
        assert cfg["loss"]["loss"] == "progressive_distillation" and cfg["loss"]["student_steps"] == 8 // 2**r
        assert cfg["train"]["steps"] == [40, 30][r - 1] and cfg["metadata"]["distill"]["round"] == r
        grid = ss.sampling.load_grid(tmp_path / f"round_{r}" / "grid.json", sde=SDE, sampler="ddim")
        torch.testing.assert_close(grid.times, res.students[r - 1].grid, rtol=0, atol=0)
        loaded = ss.load_run(tmp_path / f"round_{r}")  # the student is a run like any other
        for k, v in loaded.model.state_dict().items():
            assert torch.equal(v, res.students[r - 1].model.state_dict()[k])
    # a rerun trains nothing and returns the same students
    again = ss.distill(teacher, SDE, data, steps=8, rounds=2, out_dir=tmp_path, train_steps=[40, 30], **TRAIN)
    assert [(r.seconds, r.resumed_from) for r in again.rounds] == [(0.0, 40), (0.0, 30)]
    assert [r.final_loss for r in again.rounds] == [r.final_loss for r in res.rounds]
    for a, b in zip(again.student.state_dict().values(), res.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ss.RunFolderError, match="another configuration"):  # a changed run is refused
        ss.distill(teacher, SDE, data, steps=8, rounds=2, out_dir=tmp_path, train_steps=[40, 30],
                   **{**TRAIN, "lr": 1e-2})


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    import scoresde as ss
    torch.set_num_threads(1)
    out = sys.argv[1]
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture().to(dtype=torch.float32)
    exact = gmm.score_fn(sde)

    def paced(x, t):  # slows the run so that the parent can kill it mid-round
        time.sleep(0.004)
        return exact(x, t)

    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 500, seed=0)
    torch.manual_seed(0)
    student = ss.ScoreModel(ss.MLP(2, 32, 2), sde, "v", data_std=4.0)
    res = ss.distill(paced, sde, data, steps=8, rounds=2, student=student, out_dir=out, train_steps=[30, 150],
                     batch_size=64, lr=2e-3, warmup_steps=10, lr_schedule="cosine", checkpoint_every=10,
                     ema_decay=0.95, progress=False, seed=7)
    print("resumed from", [r.resumed_from for r in res.rounds], flush=True)
    torch.save({f"student_{s.round}": s.model.state_dict() for s in res.students}, out + "/final.pt")
    """
)


@pytest.mark.slow
def test_sigkill_mid_round_then_rerun_matches_uninterrupted_distillation(tmp_path, monkeypatch):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    monkeypatch.setattr(sys, "argv", ["run.py", str(straight)])  # the uninterrupted run, in this process
    exec(compile(KILL_SCRIPT, "run.py", "exec"), {"__name__": "__distill_run__"})

    proc = subprocess.Popen([sys.executable, script, killed], env=env, stdout=subprocess.PIPE)
    ckpts = killed / "round_2" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not any(s >= 20 for s, _ in list_checkpoints(ckpts)):
        time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = max(s for s, _ in list_checkpoints(ckpts))
    assert 20 <= done < 150 and not (killed / "final.pt").exists()

    out = subprocess.run([sys.executable, script, killed], check=True, env=env, timeout=300, capture_output=True,
                         text=True)
    assert f"resumed from [30, {done}]" in out.stdout  # round 1 skipped, round 2 resumed mid-way
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    for key in ("student_1", "student_2"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    # and the raw weights and optimiser state of the last checkpoint, bit for bit
    ca = load_checkpoint(straight / "round_2" / "checkpoints" / "step_00000150.ckpt")
    cb = load_checkpoint(killed / "round_2" / "checkpoints" / "step_00000150.ckpt")
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k])
    for i, st in ca["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], cb["optimizer"]["state"][i]["exp_avg"])


# ---- argument checks -------------------------------------------------------------------------------
class Nonlinear(ss.SDE):
    T = 1.0

    def drift(self, x, t):
        return -x**3

    def diffusion(self, x, t):
        return torch.ones_like(x)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(steps=12, rounds=3), "steps must be divisible by 2\\*\\*rounds = 8"),
    (dict(rounds=0), "rounds must be an integer >= 1"),
    (dict(steps=1), "steps must be an integer >= 2"),
    (dict(teacher=3.0), "teacher must be callable"),
    (dict(sde=Nonlinear()), "sde must be a linear SDE"),
    (dict(student=None), "student: the teacher is a plain score function"),
    (dict(student="mlp"), "student must be a torch.nn.Module"),
    (dict(train_steps=[10, 10, 10]), "train_steps must be one number or one per round \\(2\\)"),
    (dict(train_steps=0), "train_steps must be an integer >= 1"),
    (dict(grid=[1.0, 0.5, 0.1]), "grid has 2 steps but steps=8"),
    (dict(batch_sise=3), "unknown Trainer option 'batch_sise'"),
    (dict(metadata=[1]), "metadata must be a dict"),
])
def test_bad_arguments_are_named(kwargs, needle):
    args = dict(teacher=gaussian().score_fn(SDE), sde=SDE, data=gaussian_data(100), steps=8, rounds=2,
                student=small_student(), train_steps=5, progress=False)
    args.update(kwargs)
    with pytest.raises(ss.ArgumentError, match=needle):
        ss.distill(args.pop("teacher"), args.pop("sde"), args.pop("data"), **args)


def test_loss_refuses_a_bad_grid():
    with pytest.raises(ss.ArgumentError, match="2K \\+ 1 >= 3 times"):
        DistillationLoss(gaussian().score_fn(SDE), SDE, [1.0, 0.5, 0.2, 0.1])
    with pytest.raises(ss.ArgumentError, match="strictly decreasing"):
        DistillationLoss(gaussian().score_fn(SDE), SDE, [1.0, 0.2, 0.5])


# ---- the command line -----------------------------------------------------------------------------------
def test_cli_distill_then_sample_the_student(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(ROOT / "configs/toy2d.yaml"), "train.steps=30", "train.batch_size=64",
                 "model.hidden=32", "model.depth=1", "train.progress=false", "--out", str(run), "--seed", "3",
                 "--threads", "1"]) == 0
    out = tmp_path / "dist"
    cmd = ["distill", "--checkpoint", str(run), "--steps", "8", "--rounds", "2", "--out", str(out),
           "--train-steps", "15", "--batch-size", "32", "--checkpoint-every", "5", "--no-progress"]
    assert main(cmd) == 0
    text = capsys.readouterr().out
    assert "round 2: 4 -> 2 steps, 15 optimiser steps" in text
    assert f"scoresde sample --checkpoint {out / 'round_2'} --sampler ddim --grid {out / 'round_2' / 'grid.json'}" in text
    assert main(cmd) == 0  # a rerun skips both rounds
    assert "finished before (resumed at step 15)" in capsys.readouterr().out
    samples = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(out / "round_2"), "--sampler", "ddim", "--grid",
                 str(out / "round_2" / "grid.json"), "--n", "16", "--out", str(samples)]) == 0
    got = np.load(samples)
    assert got["x"].shape == (16, 2) and int(got["nfe"]) == 3  # 2 student steps + the denoising one
    meta = ss.load_run(out / "round_2").metadata
    assert meta["cli"]["data"]["name"] == "ring" and meta["distill"]["student_steps"] == 2
    # a bad argument: one line naming it, nothing trained
    assert main([*cmd[:6], "4", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "scoresde distill: error: --steps 8 must be divisible by 2**--rounds = 16 (each round halves the steps)"
    assert not (tmp_path / "bad").exists()
