"""Sphinx configuration of the scoresde documentation site (``make docs``; see docs/about.md)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

from docutils import nodes
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[1]
LOGGER = logging.getLogger(__name__)
sys.path.insert(0, str(ROOT))

project = "scoresde"
author = "the scoresde authors"
copyright = "the scoresde authors, MIT licence"

extensions = [
    "myst_parser",  # the pages are Markdown; the docstrings stay reStructuredText
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style Args / Returns / Raises sections
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from _static: the site renders its maths offline
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# the build output and the files no page should become
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# textmacros: `\text{num\_bins}` in a docstring's formula shows num_bins, not a backslash
mathjax3_config = {"loader": {"load": ["[tex]/textmacros"]}, "tex": {"packages": {"[+]": ["textmacros"]}}}

myst_enable_extensions = ["dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 4  # `page.md#a-heading` links, as GitHub renders them (RESULTS.md sits one level down)

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Class attributes", "Attributes")]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_class_signature = "mixed"
python_use_unqualified_type_names = True
add_module_names = False

# Every reference must resolve: a cross-reference to a name that does not exist, a docstring that
# does not parse, a page missing from the navigation -- each is a warning, and `-W` makes it an
# error. The only references let through are to other projects' objects (torch.Tensor, ...),
# which this site does not document and cannot link to without network access (no intersphinx).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|matplotlib|collections|typing|typing_extensions|pathlib|os|"
               r"enum|dataclasses|abc|argparse|diffusers|torchsde|torchdiffeq|sklearn)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Generator|Path|Callable|Sequence|Mapping|Iterable|Iterator|Any|"
               r"Literal|Optional|Union|Protocol|TypeVar|NamedTuple|Figure|Axes|ndarray|Dataset|"
               r"DataLoader|device|dtype|Number|PathLike)"),
    # built-in types and values written in annotations and docstrings
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|type|None|True|False|"
               r"callable|ValueError|TypeError|RuntimeError|FloatingPointError|NotImplementedError|"
               r"Exception|KeyError|OSError|FileNotFoundError|ImportError)"),
]


# Google-style "Args:" entries that name several parameters at once ("config, **overrides:"):
# escape the stars of each name, as napoleon already does for numpy-style docstrings.
def _escape_each_name(self, name, _escape=GoogleDocstring._escape_args_and_kwargs):
    return ", ".join(_escape(self, part) for part in name.split(", "))


GoogleDocstring._escape_args_and_kwargs = _escape_each_name


# napoleon reads a property's or constant's docstring "X: text" as type X and description text.
# Ours are prose ("Rank 0: the only process that ...", "Whether ... per (residual, probe): ..."),
# so X is taken as a type only where it looks like one: names joined by "|", "," or "or".
def _looks_like_type(text: str) -> bool:
    flat = re.sub(r"[\[\]()]", " , ", text)
    return all(" " not in tok for tok in re.split(r"\s*(?:\||,|\bor\b)\s*", flat.strip()) if tok)


def _parse_attribute_docstring(self, _parse=GoogleDocstring._parse_attribute_docstring):
    lines = _parse(self)
    if len(lines) >= 2 and lines[-1].startswith(":type: ") and lines[-2] == "":
        found = lines[-1][len(":type: "):]
        if not _looks_like_type(found):
            lines = lines[:-2]
            lines[0] = f"{found}: {lines[0]}" if lines else found
    return lines


GoogleDocstring._parse_attribute_docstring = _parse_attribute_docstring

html_theme = "furo"
html_title = "scoresde"
html_static_path: list[str] = []
html_show_sourcelink = False


# ---- references to the package's own objects ---------------------------------------------------
# Docstrings write references the way the code reaches an object: by its defining module
# (``scoresde.sde.vp.VPSDE``), by a re-export (``scoresde.load_run``) or by its bare name inside
# the subpackage (``:class:`Sampler```). The API pages document each public object once, under its
# subpackage. This resolver maps a reference onto that page by the object's identity, so all three
# spellings link to the same entry. A name that imports to nothing is left unresolved (a warning,
# an error under -W); one that imports to a private helper the API pages do not document is shown
# as code without a link (the reference is correct, there is just no page to send it to).
def _import(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _documented(env) -> dict[int, str]:
    cache = getattr(env, "_scoresde_documented", None)
    if cache is None:
        cache = {}
        for name, entry in env.domains["py"].objects.items():
            obj = _import(name) if name.startswith("scoresde") else None
            if obj is not None and not isinstance(obj, (int, float, str, tuple, frozenset, type(None))):
                cache.setdefault(id(obj), name)
        env._scoresde_documented = cache
    return cache


def _unwrap(obj):
    obj = inspect.unwrap(obj) if callable(obj) else obj
    return getattr(obj, "__func__", obj)


def _owner(node) -> str | None:
    """The dotted name of the object whose docstring holds ``node`` (autodoc records it in the
    source: ``.../core.py:docstring of scoresde.likelihood.core.log_likelihood``)."""
    while node is not None:
        source = node.source or ""
        if "docstring of " in source:
            return source.rsplit("docstring of ", 1)[1].split(":")[0]
        node = node.parent
    return None


def _candidates(node) -> list[str]:
    """Where a reference's target may live, nearest first: the class and module of the docstring
    that writes it (a bare name means what it means in the code), then the page's module."""
    target = node["reftarget"].lstrip(".~")
    names = []
    owner = _owner(node)
    if owner:
        parts = owner.split(".")
        names += [".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)]
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        names.append(f"{module}.{cls}.{target}")
    if module:
        names.append(f"{module}.{target}")
    names.append(target)
    return names


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    documented = _documented(env)
    names = _candidates(node)
    found_any = False
    for name in names:
        if not name.startswith("scoresde"):
            continue
        obj = _import(name)
        if obj is None:
            continue
        found_any = True
        canonical = documented.get(id(obj)) or documented.get(id(_unwrap(obj)))
        if canonical is not None:
            return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                                  canonical, node, contnode)
    if not found_any:
        # a bare name used inside one subpackage's docstrings for an object of another: one
        # documented object of that name (and only one) is the target
        short = node["reftarget"].lstrip(".~").split(".")[-1]
        matches = {full for full in env.domains["py"].objects if full.split(".")[-1] == short
                   and full.startswith("scoresde")}
        if len(matches) == 1:
            return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                                  matches.pop(), node, contnode)
        return None
    return nodes.literal(node["reftarget"], contnode.astext())


def _drop_type_docstring(app, what, name, obj, options, lines):
    """A constant without a ``#:`` comment would show its type's docstring (``dict``'s, a named
    tuple's Attributes); show none instead."""
    if what in ("data", "attribute") and lines and type(obj).__doc__ and \
            inspect.cleandoc(type(obj).__doc__).splitlines()[:1] == lines[:1]:
        lines.clear()


# ---- the benchmark plots ------------------------------------------------------------------------
class BenchmarkFigures(SphinxDirective):
    """Every PNG in benchmarks/results/, in name order, as a figure: a plot a benchmark adds shows
    on the site without an edit here. The directive's content gives captions, one
    ``name.png: caption`` a line; a plot without one is captioned by its file name."""

    has_content = True

    def run(self):
        captions = {}
        for line in self.content:
            name, sep, caption = line.partition(":")
            if sep:
                captions[name.strip()] = caption.strip()
        here = Path(self.env.doc2path(self.env.docname)).parent
        pngs = sorted((ROOT / "benchmarks" / "results").glob("*.png"))
        if not pngs:
            raise self.error("no plots in benchmarks/results/")
        for stale in sorted(set(captions) - {png.name for png in pngs}):
            LOGGER.warning("benchmark-figures: a caption for %s, which is not in benchmarks/results/", stale,
                           location=(self.env.docname, self.lineno))
        out = []
        for png in pngs:
            self.env.note_dependency(str(png))
            figure = nodes.figure(ids=[nodes.make_id(f"plot-{png.stem}")])
            figure += nodes.image(uri=os.path.relpath(png, here), alt=png.name)
            caption = nodes.caption()
            caption += nodes.literal(text=png.name)
            if png.name in captions:
                caption += nodes.Text(": " + captions[png.name])
            figure += caption
            out.append(figure)
        return out


def setup(app):
    app.add_directive("benchmark-figures", BenchmarkFigures)
    app.connect("missing-reference", _resolve)
    app.connect("autodoc-process-docstring", _drop_type_docstring, priority=100)  # before napoleon
