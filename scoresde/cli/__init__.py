"""The ``scoresde`` command: ``demo``, ``train``, ``sample``, ``likelihood``, ``compare``, ``fit-grid``,
``distill``, ``export``, ``selfcheck``.

Every user error (a missing checkpoint, an unknown config key or sampler, an output folder that
cannot be written, bad values, a run folder in use) is a :class:`~scoresde.ScoreSDEError` or an
``OSError``, printed as one line on stderr with exit status 2; any other exception is a bug and
shows its traceback. Every argument is checked before any expensive work, and outputs are
written under temporary names and renamed when complete, so a failed run leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .. import __version__
from ..errors import ScoreSDEError, check_int
from .common import VALID_KEYS, CLIError
from .helptext import PlainHelpFormatter

# descriptions reuse docstrings written for the docs site: shown without their markup
_FORMATTER = PlainHelpFormatter


def _common(p: argparse.ArgumentParser, seed_default: int | None = 0) -> None:
    p.add_argument("--seed", type=int, default=seed_default,
                   help="random seed: same seed, same result" + (f" (default {seed_default})" if seed_default is not None
                                                                  else " (default: the config's seed)"))
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest for small models on busy machines)")


def _sde_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--sde", default=None, metavar="SPEC",
                   help=f"{what}: a built-in name (vp, vp_cosine, subvp, ve) or package.module:ClassName, a "
                        "scoresde.SDE subclass importable from the current environment (constructed with the "
                        "config's sde.kwargs). Only the command line names a class to import, never a file")


def _diffusers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--diffusers", default=None, metavar="DIR",
                   help="instead of --checkpoint: a diffusers UNet2DModel and its scheduler from a local folder "
                        "written with save_pretrained (a pipeline folder with unet/ and scheduler/, or "
                        "config.json + weights + scheduler_config.json); safetensors only, nothing downloaded "
                        "(needs pip install 'scoresde[diffusers]')")


def _progress_option(p: argparse.ArgumentParser) -> None:
    # one decision for every command: common.show_progress (default: on only when stderr is a terminal)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                   help="no progress bars (by default they are shown only when stderr is a terminal)")
    g.add_argument("--progress", dest="progress", action="store_const", const=True,
                   help="progress bars even when stderr is not a terminal")


def build_parser() -> argparse.ArgumentParser:
    from . import commands, comparison, demo, grids

    parser = argparse.ArgumentParser(
        prog="scoresde", formatter_class=_FORMATTER,
        description="Score-based generative modelling with SDEs: train score models, sample them with SDE and "
                    "ODE samplers, compute exact log-likelihoods, compare samplers at equal cost.",
        epilog="Run `scoresde COMMAND --help` for a command's options. Start with `scoresde demo`.")
    parser.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", formatter_class=_FORMATTER, help="train, sample and measure a toy model; write a report",
                       description=demo.__doc__)
    demo.add_arguments(p)
    _progress_option(p)
    p.set_defaults(run=demo.run)

    p = sub.add_parser(
        "train", formatter_class=_FORMATTER, help="train a score model from a YAML config",
        description="Train a score model by denoising score matching (sliced score matching for SDEs without a "
                    "closed-form kernel). The run folder gets config.json, metrics.csv and checkpoints/step_*.ckpt; "
                    "a checkpoint carries the full config, so the other commands rebuild the model from it. A folder "
                    "that already holds a run is refused (continue it with --resume), and so is a resumed run whose "
                    "config changes anything but progress, log_every, checkpoint_every, eval_every, "
                    "keep_checkpoints, tensorboard (and steps under the constant lr_schedule).",
        epilog="Config keys (dotted, for key=value overrides):\n  " + "\n  ".join(VALID_KEYS)
               + "\nplus sde.kwargs.NAME for an argument of the SDE's constructor (e.g. sde.kwargs.eps=1e-3)."
                 "\nExample: scoresde train --config configs/toy2d.yaml train.steps=500 out=runs/quick")
    p.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML config (see configs/); default: built-in "
                   "defaults (ring mixture, VP SDE, MLP)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. train.steps=500")
    p.add_argument("--out", default=None, help="run folder (overrides the config's `out`)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder from its newest valid "
                   "checkpoint (with the same config)")
    _sde_option(p, "the SDE (default: the config's sde.name)")
    _progress_option(p)
    _common(p, seed_default=None)
    p.set_defaults(run=commands.train)

    p = sub.add_parser("sample", formatter_class=_FORMATTER, help="draw samples from a trained model",
                       description="Draw samples from a checkpoint with any sampler; writes an .npz (array `x`, "
                                   "plus `nfe`, `sampler`, `seconds`, `seeds`) and optionally a plot. Sample i is "
                                   "seeded by (--seed, i) alone and the samples are drawn in chunks of --batch-size, "
                                   "so under torchrun the ranks share the chunks and rank 0 writes the same file, "
                                   "bit for bit, as one process (docs/distributed.md).",
                       epilog="Example: torchrun --standalone --nproc_per_node=8 -m scoresde sample --checkpoint "
                              "runs/digits --n 10000 --out samples.npz")
    p.add_argument("--checkpoint", default=None, help="a checkpoint file (step_*.ckpt) or a run folder (its newest)")
    _diffusers_option(p)
    p.add_argument("--sampler", default="euler_maruyama", help="sampler name or alias (em, rd, ald); see "
                   "`scoresde.available_samplers()` (default euler_maruyama)")
    p.add_argument("--steps", type=int, default=None, help="number of steps (default: the sampler's own)")
    p.add_argument("--grid", default=None, metavar="FILE.json",
                   help="a time grid fitted by `scoresde fit-grid` (or ss.sampling.save_grid) for this SDE and "
                        "sampler; it sets the steps and the end points (a file for another SDE or sampler is refused)")
    p.add_argument("--n", "--num-samples", type=int, default=1000,
                   help="number of samples (default 1000); under torchrun write --num-samples, as torchrun's own "
                        "parser takes --n for an abbreviation of its --nnodes / --nproc-per-node")
    p.add_argument("--batch-size", type=int, default=256,
                   help="samples per sampler call (default 256): the chunk that processes share; the samples "
                        "do not depend on the number of processes (they may on this, e.g. with the adaptive ode)")
    p.add_argument("--out", default="samples.npz", help="output .npz file (default samples.npz)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="also draw the samples (scatter or image grid)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="sampler option, repeatable (e.g. --option snr=0.1 --option corrector_steps=2)")
    p.add_argument("--label", default=None, metavar="K[,K...]",
                   help="class-conditional run (model.num_classes): sample class K, or cycle through a comma-separated "
                        "list; the labels go into the .npz as `labels`")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight with --label: s + W (s(.|label) - s); 1 (default) samples the "
                        "conditional model, 0 the unconditional one, > 1 stronger guidance")
    _sde_option(p, "the SDE of a run trained with a class that is not built in, or a replacement for the run's")
    _progress_option(p)
    _common(p)
    p.set_defaults(run=commands.sample_cmd)

    p = sub.add_parser("likelihood", formatter_class=_FORMATTER, help="exact log-likelihood (bits/dim) of data",
                       description="Log-likelihood of held-out data through the probability-flow ODE, in nats per "
                                   "point, and bits/dim for image data (uniform dequantisation).")
    p.add_argument("--checkpoint", default=None, help="a checkpoint file or a run folder")
    _diffusers_option(p)
    p.add_argument("--data", default=None, help="ring, digits, a toy set name or a .npz file (default: the "
                   "held-out split of the training data; needed with --diffusers)")
    p.add_argument("--trace", choices=["exact", "hutchinson", "hutch++"], default="exact",
                   help="divergence: exact Jacobian trace (D vector-Jacobian products), the Hutchinson estimate "
                        "or Hutch++")
    p.add_argument("--probes", type=int, default=1,
                   help="Hutchinson / Hutch++ probes per point (default 1; 2 or more also give each point's "
                        "standard error)")
    p.add_argument("--exact-method", choices=["auto", "vmap", "forward", "loop", "replicate"], default="auto",
                   help="how the exact trace's products are batched (default auto: the fastest, measured at the "
                        "first evaluation)")
    p.add_argument("--frame", choices=["data", "scaled"], default="data",
                   help="the ODE's variables: data (x in t; default) or scaled (EDM's x/alpha in sigma/alpha, linear "
                        "SDEs; the same answer, fewer evaluations for some networks on VP)")
    p.add_argument("--n", type=int, default=500, help="number of data points (default 500; 0: all)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE solver relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE solver absolute tolerance (default 1e-5)")
    p.add_argument("--chunk-size", type=int, default=None, help="bound memory: directions per backward pass")
    p.add_argument("--sde-bound", type=int, default=0, metavar="SAMPLES",
                   help="also the reverse-SDE model's NLL upper bound (nll_bound) with SAMPLES Monte-Carlo "
                        "draws per point (default 0: off; linear SDEs only)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to a JSON file")
    _sde_option(p, "the SDE of a run trained with a class that is not built in, or a replacement for the run's")
    _progress_option(p)
    _common(p)
    p.set_defaults(run=commands.likelihood_cmd)

    p = sub.add_parser(
        "compare", formatter_class=_FORMATTER, help="samplers' quality against NFE, over several seeds",
        description=comparison.__doc__)
    p.add_argument("--checkpoint", default=None, help="a trained model (on the ring mixture the exact score is "
                   "compared too)")
    _diffusers_option(p)
    p.add_argument("--analytic", default=None, help="an exact mixture score instead of a model: ring or random16")
    p.add_argument("--samplers", default="em,pc,ode,heun,dpm_solver", help="comma-separated sampler names "
                   "(default em,pc,ode,heun,dpm_solver; ode runs fixed-step midpoint at the budget)")
    p.add_argument("--nfe", default="10,20,50,100", help="comma-separated NFE budgets (default 10,20,50,100)")
    p.add_argument("--n", type=int, default=2000, help="samples per run (default 2000)")
    p.add_argument("--seeds", type=int, default=3,
                   help="sampling seeds per sampler and budget (default 3): the plot shows their mean +-2 standard "
                        "errors, and an exact mixture's noise floor is a band from 8 pairs of exact draws")
    p.add_argument("--data", default=None, help="with --checkpoint: the reference data (ring, a toy set name, digits "
                   "or a .npz file; default: the run's training data)")
    p.add_argument("--out", default="compare-out", help="folder for compare.csv and compare.png (default compare-out)")
    p.add_argument("--fit-grids", action="store_true",
                   help="also run each deterministic sampler on a grid fitted to the score (ss.sampling.optimize_grid, "
                        "on calibration draws other than the compared ones): rows NAME[fitted]")
    _sde_option(p, "the SDE (with --analytic: default vp; with --checkpoint: for a run trained with a class that "
                   "is not built in, or a replacement for the run's)")
    _progress_option(p)
    _common(p)
    p.set_defaults(run=commands.compare_cmd)

    p = sub.add_parser(
        "fit-grid", formatter_class=_FORMATTER, help="fit a sampler's time grid to a model; write it as JSON",
        description=grids.__doc__,
        epilog="Example: scoresde fit-grid --checkpoint runs/toy --sampler dpm_solver --nfe 5 --out grid5.json && "
               "scoresde sample --checkpoint runs/toy --sampler dpm_solver --grid grid5.json")
    p.add_argument("--checkpoint", default=None, help="a checkpoint file or a run folder (its newest)")
    _diffusers_option(p)
    p.add_argument("--analytic", default=None, help="an exact mixture score instead of a model: ring or random16 "
                   "(with --sde, default vp)")
    p.add_argument("--sampler", default="dpm_solver", help="a deterministic sampler with fixed steps (default dpm_solver)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="sampler option, repeatable")
    p.add_argument("--steps", type=int, default=None, help="the grid's number of steps")
    p.add_argument("--nfe", type=int, default=None,
                   help="instead of --steps: the most steps within this many evaluations (final denoising one included)")
    p.add_argument("--calibration", type=int, default=128, help="calibration samples (default 128)")
    p.add_argument("--candidates", type=int, default=None,
                   help="candidate times, uniform in log-SNR (default max(120, 2 steps + 1))")
    p.add_argument("--no-refine", action="store_true",
                   help="the dynamic programme's grid alone, without the local search on the global error")
    p.add_argument("--out", default="grid.json", help="output JSON file (default grid.json)")
    _sde_option(p, "the SDE (with --analytic: default vp; with --checkpoint: a replacement for the run's)")
    _common(p)
    p.set_defaults(run=grids.fit_grid_cmd)

    p = sub.add_parser(
        "distill", formatter_class=_FORMATTER, help="distil a run's DDIM sampler into a few-step student",
        description="Progressive distillation (Salimans & Ho 2022) of the run's DDIM (eta = 0) sampler on a "
                    "grid of --steps steps (--grid): --rounds rounds, each halving the steps, each student "
                    "initialised from its teacher (round 1: the run's EMA weights). Round r trains in its own run "
                    "folder OUT/round_r/ (config.json, metrics.csv, checkpoints/) and writes OUT/round_r/grid.json, "
                    "the student's times. Rerunning the same command skips finished rounds and resumes an "
                    "interrupted one from its newest checkpoint (a changed configuration is refused).",
        epilog="Example: scoresde distill --checkpoint runs/toy --steps 64 --rounds 4 --out runs/toy-distilled && "
               "scoresde sample --checkpoint runs/toy-distilled/round_4 --sampler ddim "
               "--grid runs/toy-distilled/round_4/grid.json")
    p.add_argument("--checkpoint", required=True, help="the teacher: a checkpoint file or a run folder (its newest)")
    p.add_argument("--steps", type=int, default=64, help="the teacher's DDIM steps N (default 64)")
    p.add_argument("--rounds", type=int, default=4, help="halvings R: the student takes N / 2**R steps (default 4)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the rounds' run folders round_1/, ...")
    p.add_argument("--grid", choices=("uniform", "log_snr", "edm"), default="uniform",
                   help="the teacher's grid: equal steps in t (default), in log-SNR, or EDM's")
    p.add_argument("--train-steps", type=int, default=2000, help="optimiser steps per round (default 2000)")
    p.add_argument("--batch-size", type=int, default=256, help="training batch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the students (default 0.999)")
    p.add_argument("--checkpoint-every", type=int, default=500,
                   help="checkpoint every this many steps within a round (default 500; 0: at its end only)")
    p.add_argument("--data", default=None, help="training data (ring, digits, a toy set name or a .npz file; "
                   "default: the run's training data)")
    p.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("W_MIN", "W_MAX"),
                   help="distil the class-conditional run's classifier-free guidance for every weight in "
                        "[W_MIN, W_MAX] into one student that takes the weight as an input (Meng et al. 2023): "
                        "a guidance stage in OUT/round_0/, then the rounds; sample it with --label and --guidance")
    p.add_argument("--guidance-steps", type=int, default=None,
                   help="optimiser steps of the guidance stage (default: --train-steps)")
    _sde_option(p, "the SDE of a run trained with a class that is not built in, or a replacement for the run's")
    _progress_option(p)
    _common(p)
    p.set_defaults(run=commands.distill_cmd)

    p = sub.add_parser("export", formatter_class=_FORMATTER, help="write a run's weights as a .safetensors file",
                       description="Export the weights of a trained run (EMA by default) to a safetensors file that "
                                   "other tools read; the run's config, step and which weights they are go into its "
                                   "metadata. scoresde.load_run reads the file back as a run.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder (its newest valid checkpoint)")
    p.add_argument("--out", required=True, metavar="FILE.safetensors", help="the file to write")
    p.add_argument("--raw", action="store_true", help="the raw trained weights instead of the EMA average")
    _sde_option(p, "the SDE of a run trained with a class that is not built in")
    p.set_defaults(run=commands.export_cmd)

    p = sub.add_parser("selfcheck", formatter_class=_FORMATTER, help="check the SDE library against exact answers (a few seconds)")
    p.add_argument("--paths", type=int, default=4000, help="Monte-Carlo paths per simulated SDE (default 4000)")
    _common(p)
    p.set_defaults(run=_selfcheck)
    return parser


def _selfcheck(args: argparse.Namespace) -> int:
    from .selfcheck import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positionals in one block: `train --resume train.lr=0.05` leaves the override over
    if extra and args.command == "train" and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "threads", None) is not None:
            check_int("--threads", args.threads, 1)
            if args.command != "demo":  # the demo sets its own (default 1)
                torch.set_num_threads(args.threads)
        return args.run(args)
    except (ScoreSDEError, OSError) as err:
        # every deliberate error of the library (bad values, a checkpoint, a run folder, a diverging
        # solver or training) and the file system's: the message names what and where
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    except KeyboardInterrupt:
        msg = "interrupted"
    print(f"scoresde {args.command}: error: {msg}", file=sys.stderr)
    return 2


__all__ = ["main", "build_parser", "CLIError"]
