"""Shared pieces of the ``scoresde`` command: errors, atomic outputs, configs, checkpoints.

A run is described by a nested config (YAML file plus ``key=value`` overrides with dotted
keys). The resolved config travels inside the Trainer's checkpoint (``model.cli_config`` in its
``config_json``), so ``sample`` / ``likelihood`` / ``compare`` rebuild the SDE, the network and
the data from the checkpoint alone.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .. import analytic
from ..data import TOY_NAMES, MixtureDataset, ToyDataset, digits_dataset, load_npz
from ..errors import ScoreSDEError
from ..models import MLP, ScoreModel, UNet
from ..sampling import available_samplers
from ..sde import SDE, VESDE, VPSDE, LinearSDE, SubVPSDE
from ..training import CheckpointError, TrainConfig, load_checkpoint


class CLIError(ScoreSDEError):
    """A user error on the command line: printed as one line on stderr, exit status 2."""


# ---- outputs ---------------------------------------------------------------------------------
def check_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and check a file can be written there (else CLIError)."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".scoresde-probe-"):
            pass
    except OSError as err:
        raise CLIError(f"cannot write to output folder {str(d)!r}: {err.strerror or err}") from None
    return d


def check_output_file(path: str | os.PathLike) -> Path:
    """Check the folder of an output file is writable (nothing is created but that folder)."""
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"output {str(p)!r} is a folder; give a file name")
    check_writable_dir(p.parent if str(p.parent) else ".")
    return p


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (else is removed)."""
    path = Path(path)
    check_writable_dir(path.parent if str(path.parent) else ".")
    if path.exists() and not path.is_dir():
        raise CLIError(f"output folder {str(path)!r} exists and is not a folder")
    if path.exists():
        check_writable_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the report is an ordinary folder
    try:
        yield tmp
        if path.exists():  # swap: old aside, new in, old removed
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- small parsers ---------------------------------------------------------------------------
SAMPLER_ALIASES = {"em": "euler_maruyama", "rd": "reverse_diffusion", "ald": "annealed_langevin"}


def resolve_sampler(name: str) -> str:
    """A sampler name or alias (``em``) -> its registered name, else CLIError listing the valid ones."""
    valid = available_samplers()
    full = SAMPLER_ALIASES.get(name, name)
    if full not in valid:
        aliases = ", ".join(f"{a}={b}" for a, b in SAMPLER_ALIASES.items())
        raise CLIError(f"unknown sampler {name!r}; valid samplers are: {', '.join(valid)} (aliases: {aliases})")
    return full


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{what} must be a comma-separated list of positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise CLIError(f"{what} must be a comma-separated list of positive integers, got {text!r}")
    return values


def resolve_device(device: str | None) -> torch.device:
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CLIError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return dev


def load_class(spec: str) -> type:
    """``package.module:ClassName`` -> the class (CLIError when it cannot be imported)."""
    if ":" not in spec:
        raise CLIError(f"--sde must look like package.module:ClassName, got {spec!r}")
    mod_name, _, cls_name = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise CLIError(f"cannot import module {mod_name!r} for --sde {spec!r}: {err}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise CLIError(f"module {mod_name!r} has no attribute {cls_name!r} (from --sde {spec!r})")
    return cls


# ---- configs ---------------------------------------------------------------------------------
_TRAIN_DEFAULTS = {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
                   for f in dataclasses.fields(TrainConfig)}
_TRAIN_DEFAULTS["progress"] = True

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
    },
    "loss": {"weighting": "sigma2"},
    "train": _TRAIN_DEFAULTS,
}


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
        if isinstance(out[k], dict) and k != "kwargs":
            if not isinstance(v, dict):
                raise CLIError(f"config key {key!r} must be a mapping with keys {sorted(out[k])}, got {v!r}")
            out[k] = merge(out[k], v, key + ".")
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
    if key not in VALID_KEYS and not key.startswith("sde.kwargs."):
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
    """DEFAULTS <- the YAML file <- ``key=value`` overrides; unknown keys are errors."""
    import yaml

    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise CLIError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
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
    return cfg


# ---- building the pieces from a config -------------------------------------------------------
def build_sde(spec: dict[str, Any]) -> SDE:
    name = str(spec.get("name", "vp"))
    kwargs = dict(spec.get("kwargs") or {})
    if ":" in name:
        cls = load_class(name)
        if not (isinstance(cls, type) and issubclass(cls, SDE)):
            raise CLIError(f"{name!r} is not a subclass of scoresde.SDE")
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise CLIError(f"cannot construct {name!r} with {kwargs}: {err}") from None
    if name == "vp":
        return VPSDE(spec["beta_min"], spec["beta_max"])
    if name == "vp_cosine":
        return VPSDE(schedule="cosine")
    if name == "subvp":
        return SubVPSDE(spec["beta_min"], spec["beta_max"])
    if name == "ve":
        return VESDE(spec["sigma_min"], spec["sigma_max"])
    raise CLIError(f"unknown sde.name {name!r}; valid: vp, vp_cosine, subvp, ve or package.module:ClassName")


def build_data(spec: dict[str, Any], split: str = "train"):
    """The data set named by ``spec`` (split ``"train"`` or ``"test"``: a held-out draw / split)."""
    name = str(spec["name"])
    seed = int(spec.get("seed", 0)) + (0 if split == "train" else 1000)
    n = int(spec.get("n", 20_000)) if split == "train" else min(int(spec.get("n", 20_000)), 2000)
    if name == "ring":
        return MixtureDataset(analytic.ring_mixture(), n, seed=seed)
    if name in TOY_NAMES:
        return ToyDataset(name, n, seed=seed)
    if name == "digits":
        return digits_dataset(split)
    p = Path(name)
    if p.suffix in (".npz", ".npy"):
        if not p.is_file():
            raise CLIError(f"data file {name!r} does not exist")
        return load_npz(p, spec.get("key"))
    raise CLIError(f"unknown data.name {name!r}; valid: ring, digits, {', '.join(TOY_NAMES)} or a .npz file")


def data_shape(data) -> tuple[int, ...]:
    return tuple(data[0].shape)


def build_model(cfg: dict[str, Any], sde: SDE, shape: tuple[int, ...]) -> ScoreModel:
    m = cfg["model"]
    param = m["parameterization"] if isinstance(sde, LinearSDE) else "score"
    if m["net"] == "mlp":
        if len(shape) != 1:
            raise CLIError(f"model.net 'mlp' needs vector data; the data have shape {shape}: use model.net=unet")
        net = MLP(shape[0], int(m["hidden"]), int(m["depth"]), embedding=m["embedding"])
    elif m["net"] == "unet":
        if len(shape) != 3 or shape[1] != shape[2]:
            raise CLIError(f"model.net 'unet' needs square images (C, H, H); the data have shape {shape}")
        net = UNet(shape[0], shape[1], int(m["base"]), tuple(m["channel_mults"]), int(m["num_res_blocks"]),
                   tuple(m["attn_resolutions"]), float(m["dropout"]), embedding=m["embedding"])
    else:
        raise CLIError(f"unknown model.net {m['net']!r}; valid: mlp, unet")
    model = ScoreModel(net, sde, param, data_std=float(m["data_std"]))
    # the resolved config rides in the checkpoint (Trainer.config_dict reads model.config)
    model.config["cli_config"] = cfg
    model.config["data_shape"] = list(shape)
    return model


@dataclasses.dataclass
class Loaded:
    """A trained model rebuilt from a checkpoint."""

    model: ScoreModel
    sde: SDE
    config: dict[str, Any]
    step: int


def load_model(path: str, device: torch.device, sde_spec: str | None = None) -> Loaded:
    """Rebuild the EMA model saved by ``scoresde train`` (``sde_spec`` overrides its SDE class)."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"checkpoint {str(p)!r} does not exist")
    if p.is_dir():  # a run folder: take its newest checkpoint
        from ..training import latest_checkpoint

        found = latest_checkpoint(p / "checkpoints") or latest_checkpoint(p)
        if found is None:
            raise CLIError(f"no checkpoint (step_*.ckpt) found in {str(p)!r}")
        p = found
    try:
        state = load_checkpoint(p, map_location="cpu")
    except CheckpointError as err:
        raise CLIError(str(err)) from None
    try:
        meta = json.loads(state["config_json"])
        cfg = meta["model"]["cli_config"]
        shape = tuple(meta["model"]["data_shape"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CLIError(f"checkpoint {str(p)!r} was not written by `scoresde train` (no model config inside)") from None
    if sde_spec is not None:
        cfg = copy.deepcopy(cfg)
        cfg["sde"]["name"] = sde_spec
    sde = build_sde(cfg["sde"])
    model = build_model(cfg, sde, shape)
    weights = state.get("ema", {}).get("model", state.get("model"))
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CLIError(f"checkpoint {str(p)!r} does not match the model its config describes: {err}") from None
    model = model.to(device).eval().requires_grad_(False)
    return Loaded(model, sde, cfg, int(state.get("step", 0)))


def score_fn_for(model: torch.nn.Module):
    """The model as a score function, with gradients off (sampling only)."""

    def score_fn(x, t):
        with torch.no_grad():
            return model(x, t)

    return score_fn
