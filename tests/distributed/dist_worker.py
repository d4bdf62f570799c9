"""Worker for tests/distributed: run under ``torchrun --nproc_per_node=2`` (gloo on CPU).

``python -m torch.distributed.run ... dist_worker.py MODE OUT``; MODE is ``train`` (train, write
checkpoints, evaluate the likelihood, check errors), ``crash`` (rank 1 kills itself at step
CRASH_STEP), ``resume`` (resume from OUT and finish) or ``resume_changed`` (try to resume OUT with
another learning rate; every rank records the refusal). Rank 0 saves what the test compares.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

import scoresde as ss
import scoresde.training.run_folder as run_folder_module
import scoresde.training.trainer as trainer_module

STEPS, BATCH, CRASH_STEP = 16, 32, 12
LL_POINTS, LL_BATCH, LL_SEED = 20, 6, 3


def build(out_dir=None, eval_fn=None, **kw):
    """The run every test compares: a tiny MLP on the ring mixture, DSM with the likelihood weighting."""
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 200, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 16, 1), sde, data_std=4.0)
    opts = dict(steps=STEPS, batch_size=BATCH, lr=1e-3, warmup_steps=3, log_every=1, checkpoint_every=5,
                keep_checkpoints=10, progress=True, seed=7, tensorboard=False, ema_decay=0.9)
    opts.update(kw)
    return ss.Trainer(model, ss.DSMLoss(sde, "likelihood"), data, out_dir, eval_fn=eval_fn, **opts)


def ll_data():
    return ss.analytic.ring_mixture().sample(LL_POINTS, generator=torch.Generator().manual_seed(11)).float()


def evaluate(trainer):
    """Hutchinson PF-ODE likelihood of held-out points under the EMA model."""
    model = trainer.ema.model.eval()
    return ss.evaluate_log_likelihood(model, model.sde, ll_data(), batch_size=LL_BATCH, seed=LL_SEED,
                                      trace="hutchinson", rtol=1e-4, atol=1e-4)


def final_state(trainer):
    sd = trainer.state_dict()
    return {k: sd[k] for k in ("model", "ema", "optimizer", "step")}


def main(mode: str, out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    writes = []  # every checkpoint / config file this rank writes
    for module, name in ((trainer_module, "save_checkpoint"), (run_folder_module, "atomic_write_bytes")):
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            writes.append(_name)
            return _original(*args, **kwargs)

        setattr(module, name, spy)

    if mode == "resume_changed":
        tr = build(out / "run", lr=2e-3)
        try:
            tr.resume()
        except ss.RunFolderError as err:
            (out / f"refused{rank}.json").write_text(json.dumps({"error": str(err), "writes": writes}))
        tr.close()  # every rank got the refusal at the same point: a clean, synchronised shutdown
        return

    def crash(trainer):
        if mode == "crash" and trainer.step == CRASH_STEP and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up at all: as a lost node would go
        return {}

    tr = build(out / "run", eval_fn=crash, eval_every=1)
    info = {"rank": rank, "world_size": tr.dist.world_size}
    if mode == "resume":
        info["resumed_from"] = tr.resume()
    tr.fit()
    info["writes"] = writes
    if mode == "train":
        res = evaluate(tr)
        if rank == 0:
            torch.save({"log_p": res.log_p, "nfe": res.nfe}, out / "ll.pt")
        try:
            build(None, batch_size=BATCH + 1)
        except ValueError as err:
            info["indivisible_error"] = str(err)
        # a loss without shard= (sliced score matching: double backward through DDP) keeps the
        # replicas in sync; record a checksum of the weights per rank
        sde = ss.VPSDE()
        torch.manual_seed(0)
        ssm_tr = ss.Trainer(ss.ScoreModel(ss.MLP(2, 16, 1), sde, data_std=4.0),
                            ss.SlicedScoreMatchingLoss(sde, n_times=4, dt=0.05),
                            ss.MixtureDataset(ss.analytic.ring_mixture(), 200, seed=0), None,
                            steps=3, batch_size=BATCH, progress=False, seed=1).fit()
        info["ssm_weights"] = [float(v.double().sum()) for v in ssm_tr.model.state_dict().values()]
        info["ssm_step"] = ssm_tr.step
        # a NaN on rank 1 only must stop both ranks at the same step
        nan_tr = build(None, steps=5)
        inner = nan_tr.loss_fn

        def nan_on_rank1(model, x0, generator, **kw):
            losses = inner(model, x0, generator, **kw)
            return losses * float("nan") if (rank == 1 and nan_tr.step == 2) else losses

        nan_on_rank1.shardable = True
        nan_tr.loss_fn = nan_on_rank1
        try:
            nan_tr.fit()
        except ss.training.TrainingDivergedError as err:
            info["nan_error"] = str(err)
            info["nan_step"] = nan_tr.step
    if rank == 0:
        torch.save(final_state(tr), out / "final.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(info))
    tr.close()
    info_closed = not torch.distributed.is_initialized()
    (out / f"rank{rank}.closed").write_text(str(info_closed))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
