"""Run by torchrun (2 CPU processes, gloo): ``scoresde sample`` and ``sample_in_chunks`` inside one
process group, for the samplers whose seeding or steps depend on the batch.

Usage: ``sample_worker.py RUN_DIR OUT_DIR``. The group is initialised here once, so every
``scoresde sample`` call below joins it (and leaves it to this script). Rank 0's ``scoresde
sample`` writes the .npz files; rank 0 saves what ``sample_in_chunks`` returned on each rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import scoresde as ss
from scoresde.cli import main as cli
from scoresde.distributed_sampling import sample_in_chunks
from scoresde.training import distributed as sd

#: (name, extra CLI arguments) of the `scoresde sample` calls compared with one process
CLI_CASES = [
    ("ode", ["--sampler", "ode", "--option", "rtol=1e-3", "--option", "atol=1e-3"]),  # adaptive: steps per chunk
    ("torchsde", ["--sampler", "torchsde", "--steps", "10"]),  # no per-sample seeds: seeded per chunk
]
N, BATCH, SEED = 23, 5, 11


class OU(ss.SDE):
    """An SDE without closed-form marginals (not a LinearSDEBase): pc's corrector uses batch means."""

    prior_std = 1.0

    def drift(self, x, t):
        return -0.5 * x

    def diffusion(self, x, t):
        return torch.ones_like(x)


def ou_score(x, t):
    return -x


def nan_on_one_chunk(x, t):
    """NaN on a batch of 4 rows only: the second chunk of 9 samples in chunks of <= 5, which rank 1 draws."""
    return torch.full_like(x, float("nan")) if x.shape[0] == 4 else -x


def library_cases():
    """``sample_in_chunks`` calls compared with one process: (name, kwargs)."""
    return [("pc_ou", dict(score_fn=ou_score, sde=OU(), shape=(N, 2), seed=SEED, batch_size=BATCH, sampler="pc",
                           steps=8, snr=0.1))]


def main(run_dir: Path, out: Path) -> None:
    torch.set_num_threads(1)
    info = sd.setup(torch.device("cpu"))
    rank = info.rank
    codes = {}
    for name, extra in CLI_CASES:
        codes[name] = cli(["sample", "--checkpoint", str(run_dir), "--n", str(N), "--batch-size", str(BATCH),
                           "--seed", str(SEED), "--out", str(out / f"{name}_two.npz"), "--no-progress", *extra])
    results = {}
    for name, kw in library_cases():
        res = sample_in_chunks(**kw)
        results[name] = {"x": res.x, "seeding": res.seeding, "world_size": res.world_size}
    # a failure in one rank's chunk stops every rank with that rank's message
    try:
        sample_in_chunks(nan_on_one_chunk, ss.VPSDE(), (9, 2), batch_size=5, sampler="dpm_solver", steps=3)
        failure = None
    except ss.ScoreSDEError as err:
        failure = {"type": type(err).__name__, "message": str(err)}
    torch.save(results, out / f"library_rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"codes": codes, "failure": failure}))
    sd.shutdown(info)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
