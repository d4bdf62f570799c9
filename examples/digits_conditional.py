"""A class-conditional U-Net on scikit-learn's 8x8 digits: classifier-free guidance, classifier
guidance, and what the null class costs in bits/dim.

1. Trains a class-conditional U-Net (``num_classes=10``) by denoising score matching with label
   dropout (each label replaced by the null class with probability ``--label-dropout``), and an
   unconditional U-Net by the same recipe (same seed, data order and initial weights of the
   shared layers).
2. Samples every digit at each guidance weight ``w`` (``--weights``, default 0, 1, 3) with
   ``ss.sample(model, sde, shape, cond=labels, guidance=w)``. The convention is the library's
   one: the score is ``s(x) + w (s(x | y) - s(x))``, so **w = 0 is the unconditional model, w = 1
   the conditional one, w > 1 stronger guidance**.
3. Scores the samples with the library's digits classifier (trained once, cached; see
   ``scoresde.metrics.digits``): the label accuracy (the fraction classified as the label asked
   for) and the Fréchet distance between classifier features of the samples and of the held-out
   digits. It is NOT Inception FID: comparable only with itself; real training digits against the
   same held-out digits give its floor.
4. Classifier guidance of the unconditional U-Net with a time-dependent classifier trained here
   on noised digits (``ss.training.NoisyClassifier``).
5. Bits/dim of the held-out digits (PF-ODE, Hutchinson trace with the same probes for every
   model): the unconditional model, the conditional network's unconditional path (the null
   class), and the conditional path given the true labels.
6. Writes a PNG grid (rows = labels 0-9, columns = weights) and ``results.json``.

Run: python examples/digits_conditional.py [--fast] [--steps N] [--out DIR] [--weights 0,1,3]
(about 25 minutes on one CPU core with the defaults; --fast: a few seconds, for CI).
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

import scoresde as ss
from scoresde import viz


def train_unet(data, sde, args, num_classes):
    torch.manual_seed(args.seed)  # the shared layers start from the same weights in both nets
    net = ss.UNet(1, 8, base=args.base, channel_mults=(1, 2), attn_resolutions=(), num_classes=num_classes)
    model = ss.ScoreModel(net, sde, data_std=0.6)
    loss = ss.DSMLoss(sde, "sigma2", label_dropout=args.label_dropout if num_classes else 0.0)
    trainer = ss.Trainer(model, loss, data, None, steps=args.steps, batch_size=128, lr=1e-3,
                         warmup_steps=min(100, args.steps // 4), lr_schedule="cosine", seed=args.seed,
                         ema_decay=0.9 if args.fast else 0.999, progress=not args.fast)
    return trainer.fit().ema.model.eval().requires_grad_(False)


def bits_per_dim(score_fn, sde, x, data, args):
    ll = ss.log_likelihood(score_fn, sde, x, trace="hutchinson", rtol=args.tol, atol=args.tol,
                           generator=torch.Generator().manual_seed(2))  # the same probes for every model
    return data.bits_per_dim(ll.log_p.double()), ll.nfe


def grid_figure(samples, weights, per_cell, title):
    """Rows = labels 0-9, one block of ``per_cell`` samples per weight."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.0 + 0.42 * per_cell * len(weights) + 0.3 * len(weights), 5.0))
    FigureCanvasAgg(fig)
    for j, w in enumerate(weights):
        ax = fig.add_subplot(1, len(weights), j + 1)
        imgs = samples[w].clamp(-1, 1)  # (10, per_cell, 1, 8, 8)
        canvas = torch.ones(10 * 9 + 1, per_cell * 9 + 1)
        for r in range(10):
            for q in range(per_cell):
                canvas[1 + 9 * r:9 + 9 * r, 1 + 9 * q:9 + 9 * q] = (imgs[r, q, 0] + 1) / 2
        ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"w = {w:g}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([5 + 9 * r for r in range(10)], [str(r) for r in range(10)] if j == 0 else [])
        ax.tick_params(length=0)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", help="a few seconds: tiny models and budget (for CI)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default 2000; 20 with --fast)")
    p.add_argument("--weights", default="0,1,3", help="guidance weights (default 0,1,3; 0 = unconditional)")
    p.add_argument("--label-dropout", type=float, default=0.2, help="probability of the null class in training")
    p.add_argument("--per-class", type=int, default=None, help="samples per digit and weight (default 50)")
    p.add_argument("--sampler", default="dpm_solver", help="sampler for every weight (default dpm_solver)")
    p.add_argument("--sample-steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="digits-conditional-out", help="folder for the PNG grid and results.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    args.steps = args.steps or (20 if args.fast else 2000)
    args.base = 8 if args.fast else 32
    args.tol = 1e-3 if args.fast else 1e-4
    per_class = args.per_class or (2 if args.fast else 50)
    weights = [float(w) for w in args.weights.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "device": "cpu", "torch": torch.__version__}

    train, test = ss.digits_dataset("train"), ss.digits_dataset("test")
    clf = ss.metrics.digits_classifier()
    x_test = test.dequantized(torch.Generator().manual_seed(1))
    real = train.dequantized(torch.Generator().manual_seed(1))[:10 * per_class]
    floor = ss.metrics.digits_frechet_distance(real, x_test, classifier=clf)
    print(f"digits classifier: held-out accuracy {clf.test_accuracy:.3f}; Frechet feature distance of "
          f"{real.shape[0]} real training digits to the {x_test.shape[0]} held-out ones (the floor): {floor:.2f}")
    results["classifier_test_accuracy"], results["fd_floor"] = clf.test_accuracy, floor

    sde = ss.VPSDE()
    t0 = time.perf_counter()
    cond = train_unet(train, sde, args, num_classes=10)
    uncond = train_unet(train, sde, args, num_classes=None)
    results["train_seconds"] = time.perf_counter() - t0
    print(f"trained both U-Nets ({args.steps} steps each, label dropout {args.label_dropout}) in "
          f"{results['train_seconds']:.0f} s")

    labels = torch.arange(10).repeat_interleave(per_class)
    shape = (labels.shape[0], 1, 8, 8)
    rows, grid = [], {}
    print("\nclassifier-free guidance (w = 0: unconditional, 1: conditional, > 1: stronger)")
    print(f"{'w':>5} {'label accuracy':>15} {'Frechet dist.':>14} {'NFE':>5}")
    for w in weights:
        res = ss.sample(cond, sde, shape, sampler=args.sampler, steps=args.sample_steps, seed=3, cond=labels,
                        guidance=w)
        acc = ss.metrics.label_accuracy(res.x, labels, classifier=clf)
        fd = ss.metrics.digits_frechet_distance(res.x, x_test, classifier=clf)
        rows.append({"method": "cfg", "w": w, "label_accuracy": acc, "frechet": fd, "nfe": res.nfe})
        grid[w] = res.x.reshape(10, per_class, 1, 8, 8)[:, :8]
        print(f"{w:5g} {acc:15.3f} {fd:14.2f} {res.nfe:5d}")

    # classifier guidance of the unconditional model by a classifier of noised digits
    torch.manual_seed(args.seed)
    noisy = ss.training.NoisyClassifier(ss.MLP(64, 32 if args.fast else 256, 3, out_dim=10), sde, 10, data_std=0.6)
    ss.training.fit_noisy_classifier(noisy, train, steps=50 if args.fast else 3000, seed=args.seed)
    print("\nclassifier guidance of the unconditional U-Net (noisy-data classifier, scale w)")
    for w in [1.0, 3.0]:
        guided = ss.classifier_guidance(uncond, noisy.log_likelihood(labels), scale=w)
        res = ss.sample(guided, sde, shape, sampler=args.sampler, steps=args.sample_steps, seed=3)
        acc = ss.metrics.label_accuracy(res.x, labels, classifier=clf)
        fd = ss.metrics.digits_frechet_distance(res.x, x_test, classifier=clf)
        rows.append({"method": "classifier", "w": w, "label_accuracy": acc, "frechet": fd, "nfe": res.nfe})
        print(f"{w:5g} {acc:15.3f} {fd:14.2f} {res.nfe:5d}")
    results["sampling"] = rows

    path = out / "digits_conditional_grid.png"
    viz.save_figure(grid_figure(grid, weights, min(8, per_class),
                                   f"class-conditional U-Net, {args.sampler} {args.sample_steps} steps; "
                                   f"rows: labels, columns: guidance weight"), path)

    # bits/dim of held-out digits: unconditional model vs the conditional net's null class
    n = 16 if args.fast else x_test.shape[0]
    x, y = x_test[:n], test.labels[:n]
    bpd_u, nfe_u = bits_per_dim(uncond, sde, x, test, args)
    bpd_null, nfe_n = bits_per_dim(cond, sde, x, test, args)  # cond(x, t): y=None, the null class
    bpd_c, nfe_c = bits_per_dim(lambda x_, t_: cond(x_, t_, y=y), sde, x, test, args)
    diff = bpd_null - bpd_u
    se = lambda v: float(v.std() / math.sqrt(v.numel()))  # noqa: E731
    print(f"\nheld-out bits/dim over {n} digits (PF-ODE, Hutchinson, same probes; uniform: {math.log2(17):.2f}):")
    print(f"  unconditional U-Net:               {float(bpd_u.mean()):.4f} +- {se(bpd_u):.4f} ({nfe_u} NFE)")
    print(f"  conditional U-Net, null class:     {float(bpd_null.mean()):.4f} +- {se(bpd_null):.4f} ({nfe_n} NFE)")
    print(f"  difference null - unconditional:   {float(diff.mean()):+.4f} +- {se(diff):.4f} (paired)")
    print(f"  conditional U-Net, true labels:    {float(bpd_c.mean()):.4f} +- {se(bpd_c):.4f} ({nfe_c} NFE; for exact "
          f"densities log p(x|y) - log p(x) = log p(y|x) - log p(y) <= log 10: at most {math.log2(10) / 64:.3f} "
          f"bits/dim lower)")
    results["bits_per_dim"] = {
        "n": n, "unconditional": float(bpd_u.mean()), "unconditional_se": se(bpd_u),
        "null_class": float(bpd_null.mean()), "null_class_se": se(bpd_null),
        "null_minus_unconditional": float(diff.mean()), "null_minus_unconditional_se": se(diff),
        "conditional_true_labels": float(bpd_c.mean()), "conditional_true_labels_se": se(bpd_c),
    }
    results["seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path} and {out / 'results.json'} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
