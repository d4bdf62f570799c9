"""The ``scoresde`` command: ``demo``, ``train``, ``sample``, ``likelihood``, ``compare``, ``selfcheck``.

Every user error (a missing checkpoint, an unknown config key or sampler, an output folder that
cannot be written, bad values) is one line on stderr and exit status 2, never a traceback, and
outputs are written under temporary names and renamed when complete, so a failed run leaves
nothing half-written.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .. import __version__
from ..errors import ScoreSDEError
from .common import VALID_KEYS, CLIError

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _common(p: argparse.ArgumentParser, seed_default: int | None = 0) -> None:
    p.add_argument("--seed", type=int, default=seed_default,
                   help="random seed: same seed, same result" + (f" (default {seed_default})" if seed_default is not None
                                                                  else " (default: the config's seed)"))
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest for small models on busy machines)")


def _sde_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--sde", default=None, metavar="SPEC",
                   help=f"{what}: a built-in name (vp, vp_cosine, subvp, ve) or package.module:ClassName, "
                        "a scoresde.SDE subclass importable from the current environment (constructed without arguments)")


def build_parser() -> argparse.ArgumentParser:
    from . import commands, comparison, demo

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
    p.set_defaults(run=demo.run)

    p = sub.add_parser(
        "train", formatter_class=_FORMATTER, help="train a score model from a YAML config",
        description="Train a score model by denoising score matching (sliced score matching for SDEs without a "
                    "closed-form kernel). The run folder gets config.json, metrics.csv and checkpoints/step_*.ckpt; "
                    "a checkpoint carries the full config, so the other commands rebuild the model from it.",
        epilog="Config keys (dotted, for key=value overrides):\n  " + "\n  ".join(VALID_KEYS)
               + "\nplus sde.kwargs.NAME for a custom SDE's constructor.\nExample: scoresde train --config configs/toy2d.yaml "
                 "train.steps=500 out=runs/quick")
    p.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML config (see configs/); default: built-in "
                   "defaults (ring mixture, VP SDE, MLP)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. train.steps=500")
    p.add_argument("--out", default=None, help="run folder (overrides the config's `out`)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in the run folder")
    _common(p, seed_default=None)
    p.set_defaults(run=commands.train)

    p = sub.add_parser("sample", formatter_class=_FORMATTER, help="draw samples from a trained model",
                       description="Draw samples from a checkpoint with any sampler; writes an .npz (array `x`, "
                                   "plus `nfe`, `sampler`, `seconds`) and optionally a plot.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (step_*.ckpt) or a run folder (its newest)")
    p.add_argument("--sampler", default="euler_maruyama", help="sampler name or alias (em, rd, ald); see "
                   "`scoresde.available_samplers()` (default euler_maruyama)")
    p.add_argument("--steps", type=int, default=None, help="number of steps (default: the sampler's own)")
    p.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--out", default="samples.npz", help="output .npz file (default samples.npz)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="also draw the samples (scatter or image grid)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="sampler option, repeatable (e.g. --option snr=0.1 --option corrector_steps=2)")
    _sde_option(p, "replace the checkpoint's SDE")
    _common(p)
    p.set_defaults(run=commands.sample_cmd)

    p = sub.add_parser("likelihood", formatter_class=_FORMATTER, help="exact log-likelihood (bits/dim) of data",
                       description="Log-likelihood of held-out data through the probability-flow ODE, in nats per "
                                   "point, and bits/dim for image data (uniform dequantisation).")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder")
    p.add_argument("--data", default=None, help="ring, digits, a toy set name or a .npz file (default: the "
                   "held-out split of the training data)")
    p.add_argument("--trace", choices=["exact", "hutchinson"], default="exact",
                   help="divergence: exact Jacobian trace (D backward passes) or the Hutchinson estimate")
    p.add_argument("--n", type=int, default=500, help="number of data points (default 500; 0: all)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE solver relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE solver absolute tolerance (default 1e-5)")
    p.add_argument("--chunk-size", type=int, default=None, help="bound memory: directions per backward pass")
    p.add_argument("--sde-bound", type=int, default=0, metavar="SAMPLES",
                   help="also the reverse-SDE model's NLL upper bound (nll_bound) with SAMPLES Monte-Carlo "
                        "draws per point (default 0: off; linear SDEs only)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to a JSON file")
    _sde_option(p, "replace the checkpoint's SDE")
    _common(p)
    p.set_defaults(run=commands.likelihood_cmd)

    p = sub.add_parser(
        "compare", formatter_class=_FORMATTER, help="samplers' quality and wall time against NFE",
        description=comparison.__doc__)
    p.add_argument("--checkpoint", default=None, help="a trained model (on the ring mixture the exact score is "
                   "compared too)")
    p.add_argument("--analytic", default=None, help="an exact mixture score instead of a model: ring or random16")
    p.add_argument("--samplers", default="em,pc,ode,heun,dpm_solver", help="comma-separated sampler names "
                   "(default em,pc,ode,heun,dpm_solver; ode runs fixed-step midpoint at the budget)")
    p.add_argument("--nfe", default="10,20,50,100", help="comma-separated NFE budgets (default 10,20,50,100)")
    p.add_argument("--n", type=int, default=2000, help="samples per run (default 2000)")
    p.add_argument("--out", default="compare-out", help="folder for compare.csv and compare.png (default compare-out)")
    _sde_option(p, "the SDE (with --analytic: default vp; with --checkpoint: replaces the checkpoint's)")
    _common(p)
    p.set_defaults(run=commands.compare_cmd)

    p = sub.add_parser("selfcheck", help="check the SDE library against exact answers (a few seconds)")
    p.add_argument("--paths", type=int, default=4000, help="Monte-Carlo paths per simulated SDE (default 4000)")
    _common(p)
    p.set_defaults(run=_selfcheck)
    return parser


def _selfcheck(args: argparse.Namespace) -> int:
    from .selfcheck import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None and args.command != "demo":
            if args.threads < 1:
                raise CLIError(f"--threads must be a positive integer, got {args.threads}")
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
