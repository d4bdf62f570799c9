"""The documentation site's sources cover the public API.

The site (``make docs``: Sphinx, docs/conf.py) renders the API reference from the docstrings;
its build fails on any warning, so what it shows renders. What it cannot notice is a public name
that no page mentions: these tests make every name in ``scoresde.__all__`` and in each public
module's ``__all__`` appear on the API pages, and every public module have a page.
"""

import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

import scoresde as ss

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
DIRECTIVE = re.compile(r"^\.\. auto(module|class|exception|function|data)::\s*(\S+)", re.M)


def documented():
    """(kind, dotted name) of every autodoc directive on the API pages."""
    return [(kind, name) for page in sorted(API.glob("*.rst")) for kind, name in DIRECTIVE.findall(page.read_text())]


def _resolve(dotted):
    module, _, attr = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return getattr(importlib.import_module(module), attr)


def public_modules():
    """The package and each of its public subpackages and top-level modules: their ``__all__`` is
    the public surface (modules deeper down are implementation, re-exported by their package)."""
    names = ["scoresde"]
    for info in pkgutil.iter_modules(ss.__path__, "scoresde."):
        if not info.name.split(".")[-1].startswith("_"):
            assert "__all__" in vars(importlib.import_module(info.name)), f"{info.name} has no __all__"
            names.append(info.name)
    return names


def _is_value(obj):
    return isinstance(obj, (int, float, str, bytes, tuple, frozenset, type(None)))


def test_the_api_pages_are_there():
    entries = documented()
    assert ("function", "scoresde.sampling.sample") in entries
    assert ("function", "scoresde.likelihood.log_likelihood") in entries
    assert len(entries) > 100


@pytest.mark.parametrize("modname", public_modules())
def test_every_public_name_is_on_an_api_page(modname):
    entries = documented()
    names = {name for _, name in entries}
    objects = {id(_resolve(name)) for _, name in entries if not _is_value(_resolve(name))}
    module = importlib.import_module(modname)
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            ok = obj.__name__ in names  # a public submodule: its own automodule section
        elif _is_value(obj):
            ok = f"{modname}.{name}" in names  # a constant: by name (equal values are not the same entry)
        else:
            ok = id(obj) in objects  # a class or function: under any public name (re-exports)
        if not ok:
            missing.append(name)
    assert not missing, (f"{modname}.__all__ names not on any docs/api/*.rst page: {missing}; add an "
                         f"autoclass / autofunction / autodata line for each to its subpackage's page")


def test_the_top_level_names_are_listed_on_the_api_index():
    index = (API / "index.rst").read_text()
    listed = set(re.findall(r"<scoresde\.(\w+)>`", index))
    expected = {n for n in ss.__all__ if not inspect.ismodule(getattr(ss, n)) and not n.startswith("__")}
    assert expected - listed == set(), f"add to docs/api/index.rst: {sorted(expected - listed)}"
    assert listed - expected == set(), f"not in scoresde.__all__ any more: {sorted(listed - expected)}"


def test_every_api_page_is_in_the_api_index():
    index = (API / "index.rst").read_text()
    toctree = set(re.findall(r"^   (\w+)$", index, flags=re.M))
    assert toctree == {p.stem for p in API.glob("*.rst")} - {"index"}


def test_each_object_is_documented_once():
    """One entry per object: a second would be a duplicate description (a build warning) or a
    stale copy; re-exports link to the one entry."""
    seen = {}
    for _, name in documented():
        obj = _resolve(name)
        if inspect.ismodule(obj) or _is_value(obj):
            continue
        assert id(obj) not in seen, f"{name} is documented twice (also as {seen[id(obj)]})"
        seen[id(obj)] = name
