"""Training throughput: scoresde.Trainer against a plain hand-written PyTorch loop.

Same model, same batch, same DSM loss maths. Two plain baselines:

* ``plain``: forward, eps-prediction loss, backward, AdamW step -- the minimal loop;
* ``plain+``: the same plus gradient clipping and an EMA update (what the Trainer does besides
  logging, NaN checks, seeded data order and the schedule).

The overhead ratio is Trainer time per step / baseline time per step, measured in one run with
the variants interleaved (rounds of ``--steps`` steps each, median over ``--rounds``), so load
from other processes affects all alike. Torch runs on one thread on the CPU.

    python benchmarks/training.py [--device cuda] [--rounds 7] [--steps 100]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scoresde as ss  # noqa: E402


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def setups(device):
    sde = ss.VPSDE()
    gmm = ss.analytic.ring_mixture()
    mix = ss.MixtureDataset(gmm, 20_000, seed=0)
    digits = ss.digits_dataset("train")
    return {
        "MLP(2,128,3) ring mixture, batch 512": (
            lambda: ss.ScoreModel(ss.MLP(2, 128, 3), sde, data_std=4.0), mix, 512),
        "UNet(base 32, (1,2)) digits 8x8, batch 64": (
            lambda: ss.ScoreModel(ss.UNet(1, 8, base=32, channel_mults=(1, 2), attn_resolutions=(4,)), sde), digits, 64),
    }


def plain_loop(model, data, batch, device, extras):
    sde = model.sde
    net = model
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    ema = copy.deepcopy(net).requires_grad_(False) if extras else None
    x_all = data.train_batch(torch.arange(len(data)), torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        idx = torch.randint(0, x_all.shape[0], (batch,), device=device, generator=g)
        x0 = x_all[idx]
        t = torch.rand(batch, device=device, generator=g) * (1 - 1e-5) + 1e-5
        n = torch.randn(x0.shape, device=device, generator=g)
        alpha, sigma = sde.marginal(t)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        xt = alpha.view(shape) * x0 + sigma.view(shape) * n
        loss = 0.5 * (net.net_output(xt, t) - n).flatten(1).square().sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if extras:
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if extras:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                    pe.lerp_(p, 1e-3)
        return loss.detach()

    return step


def trainer_loop(model, data, batch, device):
    tr = ss.Trainer(model, ss.DSMLoss(model.sde, "sigma2"), data, None, steps=10**9, batch_size=batch, lr=1e-4,
                    warmup_steps=0, device=device, progress=False, log_every=10**9)

    def step():
        return tr.train_step()[0]  # detached

    return step


def timed(step, n, device):
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        out = step()
    float(out)  # wait for the last step
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()} (1 thread)"
    print(f"# device: {dev_name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| setup | Trainer steps/s | plain steps/s | plain+ (clip, EMA) steps/s | Trainer/plain time | Trainer/plain+ time |")
    print("|---|---|---|---|---|---|")
    for name, (make_model, data, batch) in setups(device).items():
        runs = {}
        for key in ("trainer", "plain", "plain+"):
            torch.manual_seed(0)
            model = make_model().to(device)
            if key == "trainer":
                runs[key] = trainer_loop(model, data, batch, device)
            else:
                runs[key] = plain_loop(model, data, batch, device, extras=(key == "plain+"))
        times = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, step in runs.items():
                times[k].append(timed(step, args.steps, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {name} | {1 / med['trainer']:.1f} | {1 / med['plain']:.1f} | {1 / med['plain+']:.1f} | "
              f"{med['trainer'] / med['plain']:.3f} | {med['trainer'] / med['plain+']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
