"""Shared pieces of the ``scoresde`` command: checked arguments, outputs, configs, runs.

A training run is described by a nested config (a YAML file plus ``key=value`` overrides with
dotted keys), checked key by key before anything runs, so a bad value is one line naming its
key. Nothing read from a file decides what is imported: ``sde.name`` is one of the built-in
names, and a user's SDE class comes only from the command line (``--sde package.module:Class``).
``scoresde train`` records its config with the run (the Trainer's ``metadata``, under ``cli``);
the other commands reload a run with :func:`scoresde.load_run`, which serves runs trained
through the Python API as well. Every output is written atomically
(:func:`scoresde._files.atomic_write`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import analytic
from .._files import remove_stale_temps
from ..data import TOY_NAMES, MixtureDataset, ToyDataset, digits_dataset, load_npz
from ..errors import (
    ArgumentError,
    ScoreSDEError,
    check_choice,
    check_device,
    check_int,
    check_positive,
    check_range,
    check_seed,
)
from ..models import MLP, PARAMETERIZATIONS, ScoreModel, UNet
from ..sampling import Sampler, available_samplers, get_sampler
from ..sde import SDE, VESDE, VPSDE, LinearSDEBase, SubVPSDE
from ..training import Run, TrainConfig, load_run
from ..training.losses import WEIGHTINGS


class CLIError(ScoreSDEError):
    """A user error on the command line: printed as one line on stderr, exit status 2."""


# ---- arguments -------------------------------------------------------------------------------
def progress_enabled(choice: bool | None, stream=None) -> bool:
    """Whether to draw progress bars: ``choice`` when given (``--progress`` / ``--no-progress``),
    else only when ``stream`` (default stderr) is a terminal, so that logs are not flooded."""
    if choice is not None:
        return bool(choice)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def show_progress(args) -> bool:
    """Progress bars for a command: its ``--progress`` / ``--no-progress``, else stderr's being a terminal."""
    return progress_enabled(getattr(args, "progress", None))


def resolve_device(device: str | None, name: str = "--device") -> torch.device:
    """The device named (default: cuda when available, else cpu), checked to exist here."""
    return check_device(name, device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


SAMPLER_ALIASES = {"em": "euler_maruyama", "rd": "reverse_diffusion", "ald": "annealed_langevin"}


def resolve_sampler(name: str) -> str:
    """A sampler name or alias (``em``) -> its registered name, else CLIError listing the valid ones."""
    valid = available_samplers()
    full = SAMPLER_ALIASES.get(name, name)
    if full not in valid:
        aliases = ", ".join(f"{a}={b}" for a, b in SAMPLER_ALIASES.items())
        raise CLIError(f"unknown sampler {name!r}; valid samplers are: {', '.join(valid)} (aliases: {aliases})")
    return full


def build_sampler(name: str, items: list[str]) -> Sampler:
    """The sampler ``name`` with ``--option NAME=VALUE`` items, each checked against its options."""
    import yaml

    cls = type(get_sampler(name))
    params = inspect.signature(cls).parameters
    names = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    open_ended = any(v.kind == v.VAR_KEYWORD for v in params.values())
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--option must look like name=value (e.g. snr=0.1), got {item!r}")
        if key not in names and not open_ended:
            raise CLIError(f"--option {key}: sampler {name!r} has no option {key!r}; its options are: "
                           f"{', '.join(names) or '(none)'}")
        try:
            options[key] = _numbers(yaml.safe_load(text)) if text else None
        except yaml.YAMLError:
            options[key] = text
    try:
        return get_sampler(name, **options)
    except (ArgumentError, TypeError) as err:
        raise CLIError(f"--option: sampler {name!r}: {err}") from None


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{what} must be a comma-separated list of positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise CLIError(f"{what} must be a comma-separated list of positive integers, got {text!r}")
    return values


def load_class(spec: str, what: str = "--sde") -> type:
    """``package.module:ClassName`` given on the command line -> the class (CLIError when it cannot be imported)."""
    mod_name, sep, cls_name = spec.partition(":")
    if not sep or not mod_name or not cls_name:
        raise CLIError(f"{what} must be a built-in name or look like package.module:ClassName, got {spec!r}")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise CLIError(f"cannot import module {mod_name!r} for {what} {spec!r}: {err}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise CLIError(f"module {mod_name!r} has no attribute {cls_name!r} (from {what} {spec!r})")
    return cls


# ---- outputs ---------------------------------------------------------------------------------
def check_writable_dir(directory: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``directory`` if needed and check a file can be written there (else CLIError)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise CLIError(f"{what} {str(d)!r} exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".scoresde-probe-"):
            pass
    except OSError as err:
        raise CLIError(f"cannot write to {what} {str(d)!r}: {err.strerror or err}") from None
    return d


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check an output file can be written (its folder is created if needed); temporary files of
    the same output left by writers that died are removed."""
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{what} {str(p)!r} is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    check_writable_dir(parent, f"the folder of {what}")
    remove_stale_temps(parent, target=p.name)
    return p


def check_plot_file(path: str | os.PathLike, what: str = "--plot") -> Path:
    """An output image whose suffix matplotlib can write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    p = check_output_file(path, what)
    formats = FigureCanvasAgg.get_supported_filetypes()
    if p.suffix.lstrip(".").lower() not in formats:
        raise CLIError(f"{what} {str(p)!r}: unsupported image type {p.suffix or '(none)'!r}; use one of "
                       f"{', '.join('.' + f for f in sorted(formats))}")
    return p


# ---- configs ---------------------------------------------------------------------------------
_TRAIN_DEFAULTS = {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
                   for f in dataclasses.fields(TrainConfig)}

DEFAULTS: dict[str, Any] = {
    "out": "runs/scoresde",
    "device": None,
    "seed": 0,
    "data": {"name": "ring", "n": 20_000, "seed": 1, "key": None},
    "sde": {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "sigma_min": 0.01, "sigma_max": 50.0, "kwargs": {}},
    "model": {
        "net": "mlp", "parameterization": "eps", "data_std": 1.0, "embedding": "fourier",
        "hidden": 128, "depth": 3,  # mlp
        "base": 32, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0,  # unet
        "num_classes": None,  # K: a class-conditional model of labelled data (ring: 8 components, digits: 10)
    },
    "loss": {"weighting": "sigma2", "label_dropout": 0.0},  # label_dropout: the null class's share, for CFG
    "train": _TRAIN_DEFAULTS,
}
#: the built-in SDEs a config may name (a class to import comes only from --sde)
SDE_NAMES = ("vp", "vp_cosine", "subvp", "ve")
NETS = ("mlp", "unet")
EMBEDDINGS = ("fourier", "sinusoidal")


def flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        if isinstance(v, dict) and k != "kwargs":
            keys += flat_keys(v, f"{prefix}{k}.")
        else:
            keys.append(prefix + k)
    return keys


VALID_KEYS = flat_keys(DEFAULTS)


def _unknown(key: str) -> CLIError:
    return CLIError(f"unknown config key {key!r}; valid keys are: {', '.join(VALID_KEYS)}")


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``base`` updated by ``update``, rejecting keys that ``base`` does not have."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = prefix + str(k)
        if k not in out:
            raise _unknown(key)
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise CLIError(f"config key {key!r} must be a mapping" + (f" with keys {sorted(out[k])}" if out[k] else "")
                               + f", got {v!r}")
            out[k] = {**out[k], **v} if k == "kwargs" else merge(out[k], v, key + ".")
        else:
            out[k] = v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    import yaml

    if "=" not in item:
        raise CLIError(f"overrides must look like key=value (e.g. train.steps=500), got {item!r}")
    key, _, text = item.partition("=")
    key = key.strip()
    if key not in VALID_KEYS and not (key.startswith("sde.kwargs.") and len(key) > len("sde.kwargs.")):
        raise _unknown(key)
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def _numbers(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: turn number-like strings into numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def load_config(path: str | None, overrides: list[str]) -> dict[str, Any]:
    """DEFAULTS <- the YAML file <- ``key=value`` overrides, every key checked (:func:`check_config`)."""
    import yaml

    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise CLIError(f"config file {str(p)!r} does not exist")
        if not p.is_file():
            raise CLIError(f"config file {str(p)!r} is not a file")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except UnicodeDecodeError:
            raise CLIError(f"config file {str(p)!r} is not a text (YAML) file") from None
        except yaml.YAMLError as err:
            raise CLIError(f"config file {str(p)!r} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise CLIError(f"config file {str(p)!r} must hold a mapping of keys, got {type(loaded).__name__}")
        cfg = merge(cfg, _numbers(loaded))
    for item in overrides:
        keys, value = parse_override(item)
        node = cfg
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = _numbers(value)
    return check_config(cfg)


def _check_key(key: str, check, value, *args):
    try:
        return check(key, value, *args)
    except ArgumentError as err:
        raise CLIError(str(err)) from None


def _check_str(key: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return value
    if not isinstance(value, str) or not value:
        raise CLIError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _check_int_list(key: str, value, allow_empty: bool) -> list[int]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise CLIError(f"{key} must be a list of positive integers such as [1, 2], got {value!r}")
    return [_check_key(f"{key}[{i}]", check_int, v, 1) for i, v in enumerate(value)]


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every key of a resolved config; a bad value is a CLIError naming its key."""
    _check_str("out", cfg["out"])
    _check_str("device", cfg["device"], allow_none=True)
    _check_key("seed", check_seed, cfg["seed"])
    d, s, m = cfg["data"], cfg["sde"], cfg["model"]
    _check_str("data.name", d["name"])
    _check_key("data.n", check_int, d["n"], 1)
    _check_key("data.seed", check_seed, d["seed"])
    _check_str("data.key", d["key"], allow_none=True)
    if s["name"] not in SDE_NAMES:
        hint = (f"; a class to import is taken only from the command line: --sde {s['name']}"
                if isinstance(s["name"], str) and ":" in s["name"] else "")
        raise CLIError(f"sde.name must be one of {', '.join(SDE_NAMES)}, got {s['name']!r}{hint}")
    for key in ("beta_min", "beta_max", "sigma_min", "sigma_max"):
        _check_key(f"sde.{key}", check_positive, s[key])
    if not isinstance(s["kwargs"], dict):
        raise CLIError(f"sde.kwargs must be a mapping of constructor arguments, got {s['kwargs']!r}")
    _check_key("model.net", check_choice, m["net"], NETS)
    _check_key("model.parameterization", check_choice, m["parameterization"], PARAMETERIZATIONS)
    _check_key("model.embedding", check_choice, m["embedding"], EMBEDDINGS)
    _check_key("model.data_std", check_positive, m["data_std"])
    for key in ("hidden", "depth", "base", "num_res_blocks"):
        _check_key(f"model.{key}", check_int, m[key], 1)
    _check_int_list("model.channel_mults", m["channel_mults"], allow_empty=False)
    _check_int_list("model.attn_resolutions", m["attn_resolutions"], allow_empty=True)
    _check_key("model.dropout", lambda k, v: check_range(k, v, 0.0, 1.0, low_closed=True), m["dropout"])
    _check_key("loss.weighting", check_choice, cfg["loss"]["weighting"], WEIGHTINGS)
    if m["num_classes"] is not None:
        _check_key("model.num_classes", check_int, m["num_classes"], 1)
    _check_key("loss.label_dropout", lambda k, v: check_range(k, v, 0.0, 1.0, low_closed=True), cfg["loss"]["label_dropout"])
    if cfg["loss"]["label_dropout"] and m["num_classes"] is None:
        raise CLIError("loss.label_dropout trains the null class of a class-conditional model: set model.num_classes")
    try:
        TrainConfig(**cfg["train"]).validate()
    except ArgumentError as err:  # its messages start with the field's name
        raise CLIError(f"train.{err}") from None
    return cfg


def train_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``train`` section as Trainer keyword arguments."""
    return {**cfg["train"], "betas": tuple(cfg["train"]["betas"])}


# ---- building the pieces ---------------------------------------------------------------------
def make_sde(name: str, section: dict[str, Any]) -> SDE:
    """The SDE ``name`` -- a built-in name, or ``package.module:Class`` from ``--sde`` -- with the
    parameters and ``kwargs`` of the config's ``sde`` section."""
    kwargs = dict(section.get("kwargs") or {})
    if name == "vp":
        cls, base = VPSDE, {"beta_min": section["beta_min"], "beta_max": section["beta_max"]}
    elif name == "vp_cosine":
        cls, base = VPSDE, {"schedule": "cosine"}
    elif name == "subvp":
        cls, base = SubVPSDE, {"beta_min": section["beta_min"], "beta_max": section["beta_max"]}
    elif name == "ve":
        cls, base = VESDE, {"sigma_min": section["sigma_min"], "sigma_max": section["sigma_max"]}
    elif ":" in name:
        cls, base = load_class(name), {}
        if not (isinstance(cls, type) and issubclass(cls, SDE)):
            raise CLIError(f"--sde {name!r} is not a subclass of scoresde.SDE")
    else:
        raise CLIError(f"unknown SDE {name!r}; valid: {', '.join(SDE_NAMES)} or package.module:ClassName")
    params = inspect.signature(cls).parameters
    for key in kwargs:
        if key in base:
            raise CLIError(f"sde.kwargs.{key} repeats an argument the SDE {name!r} already gets from its section")
        if key not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise CLIError(f"sde.kwargs.{key}: {cls.__name__} has no argument {key!r}; its arguments are: "
                           f"{', '.join(p for p in params if p not in base) or '(none)'}")
    try:
        return cls(**base, **kwargs)
    except ArgumentError as err:
        raise CLIError(f"sde {name!r}: {err}") from None
    except (TypeError, ValueError) as err:
        raise CLIError(f"cannot construct the SDE {name!r} with {kwargs}: {err}") from None


#: the exact mixture scores that ``--analytic NAME`` offers (compare, fit-grid)
ANALYTIC = {"ring": analytic.ring_mixture, "random16": lambda: analytic.random_mixture(16, 8, seed=0)}


def check_analytic_option(name: str | None) -> None:
    """``--analytic``: None or a key of :data:`ANALYTIC`."""
    if name is not None and name not in ANALYTIC:
        raise CLIError(f"unknown --analytic {name!r}; valid: {', '.join(ANALYTIC)}")


def check_sde_option(spec: str | None) -> None:
    """Check ``--sde`` before any expensive work: a built-in name, or a class that imports."""
    if spec is None or spec in SDE_NAMES:
        return
    cls = load_class(spec)
    if not (isinstance(cls, type) and issubclass(cls, SDE)):
        raise CLIError(f"--sde {spec!r} is not a subclass of scoresde.SDE")


def build_data(spec: dict[str, Any], split: str = "train", what: str = "data.name"):
    """The data set named by ``spec`` (split ``"train"`` or ``"test"``: a held-out draw / split)."""
    name = str(spec["name"])
    seed = int(spec.get("seed", 0)) + (0 if split == "train" else 1000)
    n = int(spec.get("n", 20_000)) if split == "train" else min(int(spec.get("n", 20_000)), 2000)
    if name == "ring":
        return MixtureDataset(analytic.ring_mixture(), n, seed=seed)
    if name in TOY_NAMES:
        return ToyDataset(name, n, seed=seed)
    if name == "digits":
        try:
            return digits_dataset(split)
        except ImportError as err:
            raise CLIError(f"{what} 'digits': {err}") from None
    p = Path(name)
    if p.suffix in (".npz", ".npy"):
        check_data_file(name, what)
        try:
            return load_npz(p, spec.get("key"))
        except ScoreSDEError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise CLIError(f"{what} {name!r} is not a readable .npz/.npy array file: {err}") from None
    raise CLIError(f"unknown {what} {name!r}; valid: ring, digits, {', '.join(TOY_NAMES)} or a .npz file")


def check_data_file(name: str | None, what: str) -> None:
    """A data file named on the command line exists (checked before any expensive work)."""
    if name is not None and Path(name).suffix in (".npz", ".npy") and not Path(name).is_file():
        raise CLIError(f"{what} {name!r} does not exist" if not Path(name).exists() else f"{what} {name!r} is not a file")


def build_model(cfg: dict[str, Any], sde: SDE, shape: tuple[int, ...]) -> ScoreModel:
    m = cfg["model"]
    param = m["parameterization"] if isinstance(sde, LinearSDEBase) else "score"
    if m["net"] == "mlp":
        if len(shape) != 1:
            raise CLIError(f"model.net 'mlp' needs vector data; the data have shape {shape}: use model.net=unet")
        net = MLP(shape[0], m["hidden"], m["depth"], embedding=m["embedding"], num_classes=m["num_classes"])
    else:
        if len(shape) != 3 or shape[1] != shape[2]:
            raise CLIError(f"model.net 'unet' needs square images (C, H, H); the data have shape {shape}")
        try:
            net = UNet(shape[0], shape[1], m["base"], tuple(m["channel_mults"]), m["num_res_blocks"],
                       tuple(m["attn_resolutions"]), float(m["dropout"]), embedding=m["embedding"],
                       num_classes=m["num_classes"])
        except ArgumentError as err:
            raise CLIError(f"model: {err}") from None
    return ScoreModel(net, sde, param, data_std=float(m["data_std"]))


def cli_metadata(cfg: dict[str, Any], sde_name: str) -> dict[str, Any]:
    """What ``scoresde train`` records with a run (the Trainer's ``metadata``): the sections that
    say how the data, the SDE, the model and the loss were made (``train`` is recorded anyway)."""
    # the label keys only when used: runs without labels record what they always did (and resume)
    model = {k: v for k, v in cfg["model"].items() if not (k == "num_classes" and v is None)}
    loss = {k: v for k, v in cfg["loss"].items() if not (k == "label_dropout" and not v)}
    return {"cli": {"data": cfg["data"], "sde": {**cfg["sde"], "name": sde_name}, "model": model, "loss": loss}}


def run_data_spec(run: Run) -> dict[str, Any] | None:
    """The data section ``scoresde train`` recorded with ``run`` (None for other runs)."""
    spec = run.metadata.get("cli", {}).get("data")
    return dict(spec) if isinstance(spec, dict) and isinstance(spec.get("name"), str) else None


def data_spec_for(run: Run, data_option: str | None, source: str) -> dict[str, Any]:
    """The data set of a command on ``run``: the one it was trained on, with ``--data``
    (``data_option``) naming another; a run that records none needs ``--data``."""
    spec = run_data_spec(run)
    if data_option is not None:
        return {**(spec or {}), "name": data_option}
    if spec is None:
        raise CLIError(f"{source} records no data set (not trained by `scoresde train`): pass --data")
    return spec


def load_cli_run(path: str, device: torch.device, sde_option: str | None = None, ema: bool = True) -> Run:
    """:func:`~scoresde.load_run` for ``--checkpoint`` (a run folder or a file), ``--sde`` giving
    or replacing the SDE: a built-in name, or a class constructed with the ``sde.kwargs`` the run
    recorded when it was trained with that class."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"--checkpoint {str(p)!r} does not exist (give a run folder or a checkpoint file)")
    sde = None
    if sde_option is not None:
        def sde(config: dict[str, Any]) -> SDE:
            recorded = config.get("metadata", {}).get("cli", {}).get("sde")
            same = isinstance(recorded, dict) and recorded.get("name") == sde_option
            return make_sde(sde_option, recorded if same else DEFAULTS["sde"])
    run = load_run(p, sde=sde, device=device, ema=ema)
    if run.sde is None or run.data_shape is None:
        raise CLIError(f"--checkpoint {str(p)!r}: the run records no SDE or data shape; load it in Python with "
                       f"scoresde.load_run(..., model=...)")
    return run


def score_fn_for(model: torch.nn.Module):
    """The model as a score function, with gradients off (sampling only)."""

    def score_fn(x, t, y=None, **guidance):
        with torch.no_grad():
            return model(x, t) if y is None else model(x, t, y=y, **guidance)

    score_fn.num_classes = getattr(model, "num_classes", None)  # None: unconditional (sample refuses cond=)
    score_fn.guidance_range = getattr(model, "guidance_range", None)  # a student that takes the weight
    return score_fn


def parse_labels(text: str | None, what: str = "--label") -> list[int] | None:
    """``--label 3`` or ``--label 0,1,2`` -> the labels (checked against the model later)."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{what} must be a class label or a comma-separated list of them (e.g. 3 or 0,1,2), "
                       f"got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise CLIError(f"{what} must be class labels >= 0 (e.g. 3 or 0,1,2), got {text!r}")
    return values


def label_tensor(labels: list[int], n: int, model: torch.nn.Module, what: str = "--label") -> torch.Tensor:
    """``n`` labels cycling through ``labels``, checked against the model's classes."""
    k = getattr(model, "num_classes", None)
    if not isinstance(k, int):
        raise CLIError(f"{what}: this model is unconditional (trained without model.num_classes); class labels need "
                       f"a class-conditional run (scoresde train ... model.num_classes=K)")
    if max(labels) >= k:
        raise CLIError(f"{what} must be in [0, {k - 1}] (the model has {k} classes), got {max(labels)}")
    return torch.tensor(labels, dtype=torch.long)[torch.arange(n) % len(labels)]


# ---- --checkpoint or --diffusers ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DiffusersSource:
    """A diffusers folder (``--diffusers``) in the role of a run: what ``sample``, ``likelihood``
    and ``compare`` read from a run (``model``, ``sde``, ``data_shape``; no recorded data set)."""

    model: torch.nn.Module
    sde: SDE
    data_shape: tuple[int, ...]
    folder: str
    metadata: dict = dataclasses.field(default_factory=dict)


def check_model_source(args, *, required: bool = True) -> str | None:
    """Exactly one of ``--checkpoint`` and ``--diffusers`` (or neither when not ``required``);
    ``--sde`` only with a checkpoint. Returns how to name the source in messages."""
    checkpoint, folder = args.checkpoint, getattr(args, "diffusers", None)
    if checkpoint is not None and folder is not None:
        raise CLIError("give --checkpoint (a scoresde run) or --diffusers (a diffusers folder), not both")
    if checkpoint is None and folder is None:
        if required:
            raise CLIError("give --checkpoint (a scoresde run) or --diffusers DIR (a diffusers folder)")
        return None
    if folder is not None:
        if getattr(args, "sde", None) is not None:
            raise CLIError("--sde does not apply to --diffusers: the SDE is the scheduler's noise schedule")
        if not Path(folder).is_dir():
            raise CLIError(f"--diffusers {folder!r} does not exist or is not a folder")
        return f"--diffusers {folder!r}"
    return f"--checkpoint {checkpoint!r}"


def load_diffusers_source(folder: str, device: torch.device) -> DiffusersSource:
    """``--diffusers DIR``: the UNet and scheduler of a save_pretrained folder, through
    :func:`scoresde.models.load_diffusers` (fixed classes, safetensors, local files only)."""
    from ..models.adapters import load_diffusers

    try:
        model, sde = load_diffusers(folder, device=device)
    except ArgumentError as err:
        raise CLIError(f"--diffusers: {err}") from None
    config = model.unet.config
    if getattr(config, "num_class_embeds", None) or getattr(config, "class_embed_type", None) is not None \
            or not hasattr(config, "sample_size") or type(model.unet).__name__ != "UNet2DModel":
        raise CLIError(f"--diffusers {folder!r}: the command line serves unconditional UNet2DModels; this "
                       f"{type(model.unet).__name__} needs conditioning inputs (use the Python API, "
                       f"scoresde.models.load_diffusers)")
    size = config.sample_size
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return DiffusersSource(model=model, sde=sde, data_shape=(int(config.in_channels), *map(int, hw)),
                           folder=str(folder))


def load_cli_model(args, device: torch.device) -> Run | DiffusersSource:
    """The model of ``--checkpoint`` (:func:`load_cli_run`) or of ``--diffusers``."""
    if getattr(args, "diffusers", None) is not None:
        return load_diffusers_source(args.diffusers, device)
    return load_cli_run(args.checkpoint, device, args.sde)
