"""Generate docs/api.md, the API reference, from the package's docstrings.

Run from the repository root: ``python docs/gen_api.py`` (``--check`` exits 1 when docs/api.md is
out of date; tests/test_docs_examples.py runs that check).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["scoresde.errors", "scoresde.sde", "scoresde.analytic", "scoresde.sampling", "scoresde.likelihood", "scoresde.training",
           "scoresde.models", "scoresde.data", "scoresde.metrics", "scoresde.viz"]


def _signature(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r" at 0x[0-9a-f]+", "", sig)


def _doc(obj) -> str:
    return (inspect.getdoc(obj) or "(no docstring)").strip()


def _entry(modname: str, name: str, obj) -> list[str]:
    out = []
    if inspect.isclass(obj):
        out += [f"### class `{modname}.{name}{_signature(obj)}`", "", _doc(obj), ""]
        for attr, member in sorted(vars(obj).items()):
            if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                continue
            first = (inspect.getdoc(member) or "").strip().split("\n\n")[0].replace("\n", " ")
            sig = "" if isinstance(member, property) else _signature(member)
            out.append(f"- `{attr}{sig}`" + (f": {first}" if first else ""))
        out.append("")
    elif callable(obj):
        out += [f"### `{modname}.{name}{_signature(obj)}`", "", _doc(obj), ""]
    else:
        out += [f"### `{modname}.{name}`", "", f"`{obj!r}`", ""]
    return out


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand. Everything here is",
             "also reachable as `import scoresde as ss` where `ss.__all__` re-exports it.", ""]
    for modname in MODULES:
        module = importlib.import_module(modname)
        lines += [f"## `{modname}`", "", _doc(module), ""]
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            lines += _entry(modname, name, obj)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    text = render()
    target = ROOT / "docs" / "api.md"
    if "--check" in argv:
        if not target.exists() or target.read_text() != text:
            print("docs/api.md is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
