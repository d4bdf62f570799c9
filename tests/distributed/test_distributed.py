"""Data-parallel training and evaluation on 2 CPU processes (torchrun, gloo) against one process.

Each scenario launches ``torchrun --nproc_per_node=2`` on 127.0.0.1 with a free port and a hard
timeout; the single-process reference runs in this process with the same global batch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dist_worker as W
import pytest
import torch

import scoresde as ss
from scoresde.training import distributed as sd
from scoresde.training import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")
LAUNCH_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], what: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 ARGS`` on 127.0.0.1, killed with its workers after a timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # own process group: a timeout kills the workers too
    try:
        log, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {what} did not finish within {LAUNCH_TIMEOUT_S} s")
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"torchrun {what} failed (exit {proc.returncode}):\n{log[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, log)


def torchrun(mode: str, out: Path, expect_ok: bool = True) -> subprocess.CompletedProcess:
    return launch([str(WORKER), mode, str(out)], mode, expect_ok)


def losses(run_dir: Path) -> torch.Tensor:
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, W.STEPS + 1))
    return torch.tensor([float(r["loss"]) for r in rows], dtype=torch.float64)


def assert_close_state(a, b, rtol=1e-4, atol=1e-6):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_close_state(a[k], b[k], rtol, atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close_state(x, y, rtol, atol)
    else:
        assert a == b


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The single-process reference run (same global batch, same seed)."""
    out = tmp_path_factory.mktemp("single")
    torch.set_num_threads(1)
    tr = W.build(out / "run", progress=False).fit()
    return {"dir": out / "run", "final": W.final_state(tr), "ll": W.evaluate(tr)}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    torchrun("train", out)
    return out


@pytest.mark.slow
def test_two_processes_match_one_process_losses_and_weights(single, two):
    info = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2]
    # the logged loss is the global batch's: equal to the single-process loss step by step
    torch.testing.assert_close(losses(two / "run"), losses(single["dir"]), rtol=1e-5, atol=1e-6)
    final = torch.load(two / "final.pt", weights_only=True)
    assert final["step"] == W.STEPS
    assert_close_state(final["model"], single["final"]["model"])
    assert_close_state(final["ema"], single["final"]["ema"])
    # not trivially equal: training moved the weights away from the shared initialisation
    torch.manual_seed(0)
    init = ss.ScoreModel(ss.MLP(2, 16, 1), ss.VPSDE(), data_std=4.0).state_dict()
    assert max((final["model"][k] - init[k]).abs().max() for k in init) > 1e-3


@pytest.mark.slow
def test_only_rank0_writes_and_every_rank_stops_on_one_ranks_nan(two):
    info = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 0: config.json plus checkpoints at 5, 10, 15 and the final 16; rank 1: nothing
    assert info[0]["writes"] == ["atomic_write_bytes"] + ["save_checkpoint"] * 4
    assert info[1]["writes"] == []
    assert [s for s, _ in list_checkpoints(two / "run" / "checkpoints")] == [5, 10, 15, 16]
    assert "batch_size must be divisible by the number of processes (2), got 33" in info[0]["indivisible_error"]
    # the NaN appeared on rank 1 only, at step 3; both ranks stopped there
    for i in info:
        assert i["nan_step"] == 2 and "loss is nan at step 3" in i["nan_error"]
    # a loss without shard= (per-rank noise) still keeps the two replicas identical
    assert info[0]["ssm_step"] == info[1]["ssm_step"] == 3
    assert info[0]["ssm_weights"] == info[1]["ssm_weights"]
    # the trainer that created the process group destroyed it on close()
    assert [(two / f"rank{r}.closed").read_text() for r in (0, 1)] == ["True", "True"]


@pytest.mark.slow
def test_a_changed_config_refuses_to_resume_on_every_rank_and_touches_nothing(two):
    run = two / "run"
    before = {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    torchrun("resume_changed", two)
    refused = [json.loads((two / f"refused{r}.json").read_text()) for r in (0, 1)]
    assert refused[0]["error"] == refused[1]["error"]  # rank 0 checked; every rank stops with its message
    assert "train.lr: 0.001 -> 0.002" in refused[0]["error"] and "\n" not in refused[0]["error"]
    assert refused[0]["writes"] == refused[1]["writes"] == []
    assert {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
def test_distributed_likelihood_equals_single_process(single, two):
    ll = torch.load(two / "ll.pt", weights_only=True)
    assert ll["log_p"].shape == (W.LL_POINTS,) and torch.isfinite(ll["log_p"]).all()
    one = single["ll"]
    # same chunks and probes in one process: equal up to the weights' float tolerance
    torch.testing.assert_close(ll["log_p"], one.log_p, rtol=1e-4, atol=1e-4)
    assert ll["nfe"] == one.nfe


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_uninterrupted_result(single, two, tmp_path):
    crashed = torchrun("crash", tmp_path, expect_ok=False)
    assert crashed.returncode != 0  # rank 1 was SIGKILLed at step 12
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [5, 10]
    torchrun("resume", tmp_path)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["resumed_from"] for i in info] == [10, 10]
    resumed = torch.load(tmp_path / "final.pt", weights_only=True)
    straight = torch.load(two / "final.pt", weights_only=True)
    # same world size, same reduction order: the resumed run is the uninterrupted one exactly
    assert resumed["step"] == W.STEPS
    for key in ("model", "ema", "optimizer"):
        assert_close_state(resumed[key], straight[key], rtol=0, atol=0)
    torch.testing.assert_close(losses(tmp_path / "run"), losses(two / "run"), rtol=0, atol=0)


# ---- in-process pieces -------------------------------------------------------------------------
def test_shard_range_tiles_the_global_batch_and_rejects_indivisible():
    for world in (1, 2, 3, 4):
        rows = [sd.shard_range(12, r, world) for r in range(world)]
        assert rows[0][0] == 0 and rows[-1][1] == 12
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
    with pytest.raises(ValueError, match="batch_size must be divisible by the number of processes \\(4\\), got 10"):
        sd.shard_range(10, 0, 4)


def test_rank_seed_differs_across_ranks_and_steps():
    seeds = {sd.rank_seed(0, r, s) for r in range(4) for s in range(50)}
    assert len(seeds) == 200 and all(0 <= x < 2**63 for x in seeds)
    assert sd.rank_seed(3, 1, 7) == sd.rank_seed(3, 1, 7)


def test_dsm_loss_shards_see_the_global_batch_noise():
    sde = ss.VPSDE()
    loss = ss.DSMLoss(sde, "likelihood")
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 16, 1), sde)
    x = torch.randn(12, 2)
    full = loss(model, x, torch.Generator().manual_seed(5))
    parts = [loss(model, x[a:b], torch.Generator().manual_seed(5), shard=(a, 12)) for a, b in ((0, 4), (4, 8), (8, 12))]
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="shard must be"):
        loss(model, x[:4], torch.Generator(), shard=(10, 12))


def test_single_process_trainer_is_not_distributed():
    tr = W.build(None, steps=1, progress=False)
    assert tr.dist == sd.DistInfo() and not tr.dist.enabled and tr.dist.is_main


def test_evaluate_log_likelihood_chunks_equal_plain_calls():
    gmm = ss.analytic.ring_mixture()
    sde = ss.VPSDE()
    x = gmm.sample(7, generator=torch.Generator().manual_seed(0))
    res = ss.evaluate_log_likelihood(gmm.score_fn(sde), sde, x, batch_size=3, seed=2, trace="hutchinson",
                                     rtol=1e-5, atol=1e-5)
    parts = []
    for k, lo in enumerate(range(0, 7, 3)):
        gen = torch.Generator().manual_seed(ss.likelihood.distributed.chunk_seed(2, k))
        parts.append(ss.log_likelihood(gmm.score_fn(sde), sde, x[lo:lo + 3], trace="hutchinson", generator=gen,
                                       rtol=1e-5, atol=1e-5).log_p)
    assert torch.equal(res.log_p, torch.cat(parts)) and res.world_size == 1
    # with the exact trace and the exact prior it is the analytic density up to solver tolerance
    ex = ss.evaluate_log_likelihood(gmm.score_fn(sde), sde, x, batch_size=3, trace="exact", rtol=1e-5, atol=1e-5,
                                    prior_log_prob=gmm.prior_log_prob(sde))
    exact = gmm.log_prob(x, torch.full((7,), sde.eps, dtype=x.dtype), sde)
    torch.testing.assert_close(ex.log_p, exact, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        ss.evaluate_log_likelihood(gmm.score_fn(sde), sde, x, batch_size=0)
    with pytest.raises(ValueError, match="generator is not accepted"):
        ss.evaluate_log_likelihood(gmm.score_fn(sde), sde, x, generator=torch.Generator())


@pytest.mark.slow
def test_scoresde_train_command_runs_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node=2 -m scoresde train --config ...` works as is: one report, one
    set of files (rank 0), the run's config records both processes."""
    out = tmp_path / "run"
    proc = launch(["-m", "scoresde", "train", "--config", str(ROOT / "configs" / "toy2d.yaml"),
                   "train.steps=20", "train.batch_size=64", "train.progress=false",
                   "train.checkpoint_every=10", f"out={out}"], "scoresde train")
    assert proc.stdout.count("on 2 processes; writing to") == 1, proc.stdout
    assert proc.stdout.count("done: 20 steps") == 1, proc.stdout
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [10, 20]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
