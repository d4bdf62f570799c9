r"""JSON specs of the built-in SDEs and networks: what a run records and how it is rebuilt.

A spec is ``{"name": <built-in name>, "kwargs": {<constructor arguments>}}``. Rebuilding looks
the name up in a fixed table (:data:`SDES`, :data:`NETS`) and calls that constructor, which
checks every argument. Nothing is ever imported: a spec read from a file can only select one of
these classes with JSON arguments. Anything else -- a subclass, a :class:`~scoresde.LinearSDE`
of callables, a ``VPSDE`` with a callable schedule (whose ``spec()`` is None), a user's
network -- is recorded as ``{"custom": "module:QualName", "repr": ...}``
for the messages, and the caller passes the object itself when the run is loaded.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..errors import ArgumentError
from ..sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from .mlp import MLP
from .unet import UNet

#: the SDEs a spec can name (each has ``spec()``: its constructor's arguments)
SDES: dict[str, type] = {"VPSDE": VPSDE, "SubVPSDE": SubVPSDE, "VESDE": VESDE, "DiscreteVPSDE": DiscreteVPSDE}
#: the networks a spec can name (each has ``config``: its constructor's arguments)
NETS: dict[str, type] = {"MLP": MLP, "UNet": UNet}


def class_path(obj: Any) -> str:
    """``module:QualName`` of ``obj``'s class (for messages; never imported)."""
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def sde_spec(sde: SDE) -> dict[str, Any]:
    """The spec of ``sde``: built-in (exactly one of :data:`SDES`, not a subclass) or custom."""
    if type(sde) in SDES.values():
        kwargs = sde.spec()
        if kwargs is not None:
            return {"name": type(sde).__name__, "kwargs": kwargs}
    return {"custom": class_path(sde), "repr": repr(sde)}


def net_spec(net: nn.Module) -> dict[str, Any]:
    """The spec of ``net``: built-in (exactly one of :data:`NETS`) or custom."""
    if type(net) in NETS.values():
        return {"name": type(net).__name__, "kwargs": dict(net.config)}
    return {"custom": class_path(net)}


def is_custom(spec: Any) -> bool:
    return isinstance(spec, dict) and "custom" in spec


def _build(spec: Any, table: dict[str, type], what: str, hint: str):
    if not isinstance(spec, dict):
        raise ArgumentError(f"the {what} spec must be a mapping, got {spec!r}")
    if "custom" in spec:
        raise ArgumentError(
            f"the {what} is {spec['custom']!r}, which is not built in ({', '.join(table)}) and is never "
            f"imported from a file: {hint}"
        )
    name, kwargs = spec.get("name"), spec.get("kwargs", {})
    if name not in table:
        raise ArgumentError(f"the {what} spec names {name!r}, not one of the built-in {', '.join(table)}")
    if not isinstance(kwargs, dict):
        raise ArgumentError(f"the {what} spec's kwargs must be a mapping, got {kwargs!r}")
    cls = table[name]
    params = inspect.signature(cls).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ArgumentError(f"{name} has no argument {unknown[0]!r}; its arguments are {', '.join(params)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # e.g. a string where a number belongs
        raise ArgumentError(f"{name}(**{kwargs!r}) failed: {err}") from None


def build_sde(spec: Any) -> SDE:
    """The built-in SDE of ``spec`` (ArgumentError for a custom or malformed one)."""
    return _build(spec, SDES, "SDE", "pass it explicitly (load_run(..., sde=...), or --sde package.module:Class)")


def build_net(spec: Any) -> nn.Module:
    """The built-in network of ``spec`` (ArgumentError for a custom or malformed one)."""
    return _build(spec, NETS, "network", "build the model yourself and pass it (load_run(..., model=...))")
