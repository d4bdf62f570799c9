"""Bits/dim of scikit-learn's 8x8 digits under a small U-Net score model.

Trains a U-Net by denoising score matching (likelihood weighting by default, ``--weighting
sigma2`` for the other) on the dequantised digits (17 intensity levels mapped onto [-1, 1]) and
reports the bits/dim of held-out digits through
the probability-flow ODE:

    bpd = -(log p(x) + D log(2/17)) / (D ln 2),

averaged over the uniform dequantisation noise (an upper bound on the discrete model's
bits/dim; see docs/likelihood.md). The uniform distribution over 17 levels gives
log2(17) = 4.09 bits/dim, the bound any useful model must beat. With the default budget (a few
minutes of CPU) the result is a rough model; train longer (`--steps`) for better numbers.
It also reports the variational bound on the bits/dim of the reverse-SDE model built from the
same network (``ss.nll_bound``), the likelihood that the likelihood weighting minimises.

Run: python examples/digits_bpd.py [--fast] [--steps N] [--weighting likelihood|sigma2] [--out DIR]
"""

import argparse
import math
import time
from pathlib import Path

import torch

import scoresde as ss
from scoresde import viz


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", help="a few seconds: tiny model and budget (for CI)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 2000; 30 with --fast)")
    p.add_argument("--out", default="digits-out", help="folder for the sample grid")
    p.add_argument("--weighting", choices=["likelihood", "sigma2"], default="likelihood",
                   help="DSM weighting (default likelihood: g^2 with importance-sampled t)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    steps = args.steps or (30 if args.fast else 2000)
    train, test = ss.digits_dataset("train"), ss.digits_dataset("test")
    sde = ss.VPSDE()
    torch.manual_seed(0)
    net = ss.UNet(1, 8, base=8 if args.fast else 32, channel_mults=(1, 2), attn_resolutions=())
    model = ss.ScoreModel(net, sde, data_std=0.6)
    trainer = ss.Trainer(model, ss.DSMLoss(sde, args.weighting), train, None, steps=steps, batch_size=128, lr=1e-3,
                         warmup_steps=min(100, steps // 4), lr_schedule="cosine", ema_decay=0.999 if not args.fast
                         else 0.9, progress=not args.fast)
    trainer.fit()
    ema = trainer.ema.model.eval()

    n = 8 if args.fast else 128
    x = test.dequantized(torch.Generator().manual_seed(1))[:n]
    ll = ss.log_likelihood(ema, sde, x, trace="hutchinson", rtol=1e-3 if args.fast else 1e-4,
                           atol=1e-3 if args.fast else 1e-4, generator=torch.Generator().manual_seed(2))
    bpd = test.bits_per_dim(ll.log_p.double())
    print(f"held-out bits/dim over {n} digits: {float(bpd.mean()):.3f} +- {float(bpd.std() / math.sqrt(n)):.3f} "
          f"(uniform over 17 levels: {math.log2(17):.2f}); {ll.nfe} ODE evaluations")
    with torch.no_grad():  # the reverse-SDE model of the same network: an upper bound on its NLL
        bound = ss.nll_bound(ema, sde, x, samples=8 if args.fast else 256, chunk_size=8,
                             generator=torch.Generator().manual_seed(4))
    bpd_sde = test.bits_per_dim(-bound.nll.double())
    print(f"reverse-SDE model of the same network: bits/dim <= {float(bpd_sde.mean()):.3f} "
          f"+- {float(bpd_sde.std() / math.sqrt(n)):.3f} (variational bound, {bound.samples} draws per digit)")

    with torch.no_grad():
        res = ss.sample(ema, sde, (16 if args.fast else 64, 1, 8, 8), sampler="dpm_solver", steps=20, seed=3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viz.image_grid(res.x.clamp(-1, 1), title=f"DPM-Solver, {res.nfe} NFE", path=out / "digits_samples.png")
    print(f"wrote {out / 'digits_samples.png'} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
