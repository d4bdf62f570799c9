"""The registry of sampler names, and every list of capabilities derived from it.

``@register`` makes a :class:`~scoresde.sampling.Sampler` subclass reachable by its ``name``.
Nothing else keeps a list of samplers: which ones serve an SDE, which are stochastic, what each
costs per step are all read from the registered classes (:func:`samplers_serving`,
:func:`capabilities`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence

from ..errors import ArgumentError
from ..sde import SDE
from .base import Sampler

_REGISTRY: dict[str, type[Sampler]] = {}


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make ``cls`` reachable as ``sample(..., sampler=cls.name)``."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise ArgumentError(f"register takes a Sampler subclass, got {cls!r}")
    if not getattr(cls, "name", None):
        raise ArgumentError(f"sampler class {cls.__name__} must set a non-empty `name`")
    _REGISTRY[cls.name] = cls
    return cls


def available_samplers() -> list[str]:
    """The names accepted by ``sample(..., sampler=...)``."""
    return sorted(_REGISTRY)


def samplers_serving(sde: SDE) -> list[str]:
    """The registered samplers that serve ``sde`` with their default options."""
    return [name for name in available_samplers() if _REGISTRY[name]().serves(sde)]


def capabilities(sde: SDE) -> dict[str, dict]:
    """Per registered sampler (default options): whether it serves ``sde``, its requirements,
    orders, evaluations per step and whether it is stochastic, for tables and tests."""
    out = {}
    for name in available_samplers():
        smp = _REGISTRY[name]()
        serves = smp.serves(sde)
        out[name] = dict(
            serves=serves,
            requires=tuple(r.name for r in smp.requirements()),
            stochastic=smp.is_stochastic(),
            order=smp.order(sde) if serves else None,
            weak_order=smp.weak_order(sde) if serves else None,
            evaluations_per_step=smp.evaluations(1, sde) if serves else None,
        )
    return out


def check_serves(sampler: Sampler, sde: SDE) -> None:
    """The one check of an SDE against a sampler's declared needs: raise
    :class:`~scoresde.errors.ArgumentError` if ``sde`` misses a requirement, quoting what is
    missing and naming the registered samplers that serve ``sde``."""
    if not isinstance(sde, SDE):
        raise ArgumentError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    missing = [r for r in sampler.requirements() if not r.met_by(sde)]
    if not missing:
        return
    hints = list(dict.fromkeys(r.hint for r in missing))
    kind = type(sde).__name__
    serving = samplers_serving(sde)
    others = f"samplers that serve {kind}: {', '.join(serving)}" if serving else f"no sampler serves {kind}"
    raise ArgumentError(
        f"sampler {sampler.name!r} needs {' with '.join(r.description for r in missing)} "
        f"({'; '.join(hints)}), got {kind}; {others}"
    )


def get_sampler(name: str | Sampler | type[Sampler], **options) -> Sampler:
    """A sampler instance from a registered name, a class, or an instance (options must then be empty).

    An option the sampler does not take is refused by name, with the valid ones listed.
    """
    return make_sampler(name, options)


def make_sampler(name: str | Sampler | type[Sampler], options: dict, *, also: Sequence[str] = ()) -> Sampler:
    """:func:`get_sampler` with the caller's own keyword names ``also`` offered as suggestions
    (a misspelt :func:`~scoresde.sample` argument lands among the sampler's options)."""
    if isinstance(name, Sampler):
        if options:
            raise ArgumentError(
                f"options {sorted(options)} cannot be applied to an existing sampler instance; "
                "pass them to its constructor"
            )
        return name
    if isinstance(name, type) and issubclass(name, Sampler):
        cls = name
    elif isinstance(name, str) and name in _REGISTRY:
        cls = _REGISTRY[name]
    else:
        raise ArgumentError(f"unknown sampler {name!r}; valid names are: {', '.join(available_samplers())}")
    check_options(cls, options, also=also)
    return cls(**options)


def sampler_options(cls: type[Sampler]) -> list[str] | None:
    """The keyword options of a sampler class (None when its constructor takes ``**kwargs``)."""
    params = list(inspect.signature(cls).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_options(cls: type[Sampler], options: dict, *, also: Sequence[str] = ()) -> None:
    """Refuse options that ``cls`` does not take, naming them, a close match (among the valid
    ones and ``also``) and the valid ones."""
    valid = sampler_options(cls)
    if valid is None:
        return
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    label = f"sampler {cls.name!r}" if cls.name else f"sampler class {cls.__name__}"
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, list(valid) + list(also), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    takes = f"its options are: {', '.join(valid)}" if valid else "it takes no options"
    raise ArgumentError(f"{label} has no option {', '.join(hints)}; {takes}")
