"""Throughput of data-parallel training: 1 process vs 2 processes (torchrun, gloo on CPU).

Runs ``torchrun --nproc_per_node=P`` for P in (1, 2) on the same global batch and network,
times the steady-state steps (after warm-up) on rank 0 and prints steps/s, samples/s and the
2-vs-1 ratio measured in this run. On a CUDA machine pass ``--device cuda`` (NCCL; one GPU
per process, so P must not exceed the GPU count).

    python benchmarks/distributed.py [--steps 60] [--batch 256] [--width 256] [--device cpu]

Each process uses one thread (``OMP_NUM_THREADS=1``): P processes use P cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    import torch

    import scoresde as ss

    torch.set_num_threads(1)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.device == "cuda" else None
    sde = ss.VPSDE()
    data = ss.MixtureDataset(ss.analytic.ring_mixture(), 20_000, seed=0)
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, args.width, args.depth), sde, data_std=4.0)
    tr = ss.Trainer(model, ss.DSMLoss(sde, "likelihood"), data, None, device=device, steps=args.warmup + args.steps,
                    batch_size=args.batch, lr=1e-3, warmup_steps=10, progress=False, tensorboard=False)
    tr.fit(args.warmup)
    torch.distributed.barrier() if tr.dist.enabled else None
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    tr.fit()
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if tr.dist.is_main:
        Path(args.result).write_text(json.dumps({"world": tr.dist.world_size, "seconds": seconds, "steps": args.steps}))
    tr.close()


def launch(nproc: int, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={port}", __file__, "--worker", "--result", str(result),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
               "--width", str(args.width), "--depth", str(args.depth), "--device", args.device]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, env=env, check=True, timeout=600, stdout=subprocess.DEVNULL)
        return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"device: {args.device}; CPU {cpu}; {os.cpu_count()} cores; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"MLP width {args.width} depth {args.depth}, global batch {args.batch}, {args.steps} timed steps")
    rows = {}
    for nproc in args.procs:
        r = launch(nproc, args)
        sps = r["steps"] / r["seconds"]
        rows[nproc] = sps
        print(f"processes {nproc}: {sps:8.2f} steps/s  {sps * args.batch:10.0f} samples/s")
    if 1 in rows:
        for nproc, sps in rows.items():
            if nproc != 1:
                print(f"speed-up {nproc} vs 1 process: {sps / rows[1]:.2f}x")


if __name__ == "__main__":
    main()
