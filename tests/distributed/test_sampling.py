"""``scoresde sample`` under torchrun (2 CPU processes, gloo) against one process, bit for bit.

The reference runs as ``python -m scoresde sample`` in a fresh process with the same thread
count as each torchrun worker (one), and the library cases in this process (also one thread,
tests/conftest.py). Single-process properties of the chunking and seeding are checked first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sample_worker as SW
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_distributed import launch

import scoresde as ss
from scoresde.distributed_sampling import (
    chunk_bounds,
    chunk_seed,
    per_sample_refusal,
    sample_in_chunks,
    sample_seed,
    sample_seeds,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sample_worker.py")


# ---- one process ------------------------------------------------------------------------------
@given(st.integers(1, 500), st.integers(1, 600))
def test_chunks_cover_the_samples_in_order_with_sizes_within_one(n, batch):
    bounds = chunk_bounds(n, batch)
    assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) == -(-n // batch)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_seeds_depend_on_the_seed_and_the_index_only():
    a = sample_seeds(0, 1000)
    assert sample_seeds(0, 10) == a[:10] and len(set(a)) == 1000  # a prefix; all distinct
    assert not set(a) & set(sample_seeds(1, 1000))  # --seed 1 is not --seed 0 shifted
    assert all(0 <= s < 2**63 for s in a + [chunk_seed(0, k) for k in range(100)])
    assert sample_seed(7, 3) == sample_seeds(7, 4)[3] and chunk_seed(0, 0) != chunk_seed(1, 0)


def test_the_sampler_is_asked_whether_it_takes_per_sample_seeds():
    vp = ss.VPSDE()
    for name in ("euler_maruyama", "ancestral", "pc", "ode", "heun", "dpm_solver"):
        assert per_sample_refusal(vp, name, (2,)) is None, name
    assert "torchsde" in per_sample_refusal(vp, "torchsde", (2,))
    assert "batch-mean score norm" in per_sample_refusal(SW.OU(), "pc", (2,))
    assert per_sample_refusal(SW.OU(), "pc", (2,), corrector="none") is None  # no corrector: no batch mean


def test_a_sample_is_its_seed_alone_with_a_row_by_row_score():
    """With per-sample seeds, a fixed-step sampler and a score computed row by row (the exact
    mixture), neither the chunk size nor the batch-mates change a sample."""
    sde, gmm = ss.VPSDE(), ss.analytic.ring_mixture()
    score = gmm.score_fn(sde)
    kw = dict(seed=4, sampler="euler_maruyama", steps=15, dtype=torch.float64)
    a = sample_in_chunks(score, sde, (30, 2), batch_size=7, **kw)
    b = sample_in_chunks(score, sde, (30, 2), batch_size=30, **kw)
    assert a.seeding == "per_sample" and a.seeds == sample_seeds(4, 30) and len(a.bounds) == 5
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe == 16
    one = ss.sample(score, sde, (1, 2), sampler="euler_maruyama", steps=15, seed=[a.seeds[12]], dtype=torch.float64)
    assert torch.equal(one.x[0], a.x[12])
    assert not torch.equal(a.x, sample_in_chunks(score, sde, (30, 2), batch_size=7, **{**kw, "seed": 5}).x)


def test_labels_are_sliced_with_their_samples():
    sde = ss.VPSDE()

    def score(x, t, y=None):  # the exact score of data N(y, 0.1^2) under the VP: samples land on their label
        a, s = sde.marginal(t)
        mean = a[:, None] * (0 if y is None else y[:, None].to(x.dtype))
        return -(x - mean) / (0.01 * a[:, None] ** 2 + s[:, None] ** 2)

    labels = torch.arange(13) % 3
    kw = dict(seed=2, sampler="dpm_solver", steps=6, dtype=torch.float64)
    a = sample_in_chunks(score, sde, (13, 2), batch_size=4, cond=labels, **kw)
    whole = ss.sample(score, sde, (13, 2), seed=sample_seeds(2, 13), cond=labels, sampler="dpm_solver", steps=6,
                      dtype=torch.float64)
    assert torch.equal(a.x, whole.x)
    assert torch.equal(a.x.mean(1).round(), labels.to(a.x.dtype))  # each label moved its own sample
    b = sample_in_chunks(score, sde, (13, 2), batch_size=4, cond=labels.tolist(), guidance=1.0, **kw)
    assert torch.equal(a.x, b.x)


def test_samplers_without_per_sample_seeds_are_seeded_per_chunk():
    sde, gmm = ss.VPSDE(), ss.analytic.ring_mixture()
    a = sample_in_chunks(gmm.score_fn(sde), sde, (12, 2), seed=1, batch_size=5, sampler="torchsde", steps=5,
                         dtype=torch.float64)
    assert a.seeding == "per_chunk" and a.seeds is None and a.chunk_seeds == [chunk_seed(1, k) for k in range(3)]
    assert "cannot use per-sample seeds" in a.refusal and torch.isfinite(a.x).all()
    # chunk k is ss.sample with chunk k's seed: the same whichever process draws it
    lo, hi = a.bounds[1]
    alone = ss.sample(gmm.score_fn(sde), sde, (hi - lo, 2), sampler="torchsde", steps=5, seed=a.chunk_seeds[1],
                      dtype=torch.float64)
    assert torch.equal(alone.x, a.x[lo:hi])


def test_bad_arguments_are_named():
    sde = ss.VPSDE()
    with pytest.raises(ss.ArgumentError, match="batch_size must be an integer >= 1, got 0"):
        sample_in_chunks(lambda x, t: -x, sde, (4, 2), batch_size=0)
    with pytest.raises(ss.ArgumentError, match="it does not take generator, x_start"):
        sample_in_chunks(lambda x, t: -x, sde, (4, 2), x_start=torch.zeros(4, 2), generator=None)
    with pytest.raises(ss.ArgumentError, match=r"cond must hold one label per sample \(4\), got shape \(3,\)"):
        sample_in_chunks(lambda x, t, y=None: -x, sde, (4, 2), cond=torch.zeros(3, dtype=torch.long))


# ---- torchrun ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (MLP on the ring, 20 steps) to sample from."""
    out = tmp_path_factory.mktemp("sample_run") / "run"
    sde = ss.VPSDE()
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 32, 2), sde, data_std=4.0)
    ss.Trainer(model, ss.DSMLoss(sde), ss.MixtureDataset(ss.analytic.ring_mixture(), 500, seed=0), out, steps=20,
               batch_size=64, progress=False, tensorboard=False).fit()
    return out


def one_process(args: list[str]) -> None:
    """``python -m scoresde ARGS`` in a fresh process on one thread, like each torchrun worker."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "scoresde", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def assert_same_samples(two: Path, one: Path, world: int = 2) -> dict:
    a, b = np.load(two), np.load(one)
    assert a["x"].dtype == b["x"].dtype and a["x"].tobytes() == b["x"].tobytes()  # bit for bit
    assert int(a["world_size"]) == world and int(b["world_size"]) == 1
    for key in ("nfe", "seeding", "batch_size", "seed"):
        assert a[key] == b[key], key
    return {"seeding": str(a["seeding"]), "x": a["x"]}


@pytest.mark.slow
def test_torchrun_scoresde_sample_equals_one_process_bit_for_bit(run_dir, tmp_path):
    args = ["sample", "--checkpoint", str(run_dir), "--sampler", "em", "--steps", "20", "--batch-size", "8",
            "--seed", "3", "--no-progress"]
    (tmp_path / "two").mkdir()
    # --num-samples, not --n: torchrun's parser would take --n for an abbreviation of its own options
    proc = launch(["-m", "scoresde", *args, "--num-samples", "37", "--out", str(tmp_path / "two" / "s.npz")],
                  "scoresde sample")
    one_process([*args, "--n", "37", "--out", str(tmp_path / "one.npz")])
    got = assert_same_samples(tmp_path / "two" / "s.npz", tmp_path / "one.npz")
    assert got["seeding"] == "per_sample" and np.isfinite(got["x"]).all() and got["x"].shape == (37, 2)
    assert np.load(tmp_path / "one.npz")["seeds"].tolist() == sample_seeds(3, 37)
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["s.npz"]  # rank 0 alone wrote, no temp left
    reports = [ln for ln in proc.stdout.splitlines() if "37 samples with euler_maruyama" in ln]
    assert len(reports) == 1 and "5 chunks of <= 8 on 2 processes" in reports[0]  # rank 0 alone reported


@pytest.mark.slow
def test_torchrun_adaptive_ode_per_chunk_seeds_and_a_peers_failure(run_dir, tmp_path):
    launch([str(WORKER), str(run_dir), str(tmp_path)], "sample_worker")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["codes"] for r in ranks] == [{name: 0 for name, _ in SW.CLI_CASES}] * 2
    for name, extra in SW.CLI_CASES:
        one_process(["sample", "--checkpoint", str(run_dir), "--n", str(SW.N), "--batch-size", str(SW.BATCH),
                     "--seed", str(SW.SEED), "--out", str(tmp_path / f"{name}_one.npz"), "--no-progress", *extra])
        got = assert_same_samples(tmp_path / f"{name}_two.npz", tmp_path / f"{name}_one.npz")
        assert got["seeding"] == ("per_chunk" if name == "torchsde" else "per_sample"), name
    ode = np.load(tmp_path / "ode_two.npz")
    assert int(ode["nfe"]) > 20  # adaptive: the steps are the chunk's (they differ between chunks)
    # sample_in_chunks in the group: the same on both ranks and equal to this one process
    for name, kw in SW.library_cases():
        want = sample_in_chunks(**kw)
        for r in (0, 1):
            got = torch.load(tmp_path / f"library_rank{r}.pt", weights_only=True)[name]
            assert got["world_size"] == 2 and got["seeding"] == want.seeding == "per_chunk"
            assert torch.equal(got["x"], want.x), (name, r)
    # rank 1's chunk went non-finite: rank 1 raised its error, rank 0 the same kind with rank 1's message
    f0, f1 = ranks[0]["failure"], ranks[1]["failure"]
    assert f0["type"] == f1["type"] == "NonFiniteError"
    assert f0["message"].startswith("rank 1: ") and f1["message"].splitlines()[0] in f0["message"]
