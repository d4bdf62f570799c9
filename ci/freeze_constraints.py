"""Write constraints.txt: the exact installed version of every package in scoresde's dependency
tree (core and every extra, read from pyproject.toml, then each package's installed metadata).

Run with the venv the test suite passed in: ``make constraints`` (``.venv/bin/python ci/freeze_constraints.py``).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# The exact versions CI installs (.ci/run -> make test / make docs -> pip install -c constraints.txt):
# scoresde's dependency tree (core, every extra, and what they pull in) as installed in the venv
# the test suite last passed in, so that no new release can change a CI run. Regenerate after
# changing a dependency or its bounds, from a venv that passes the tests: make constraints
# pyproject.toml keeps the ranges users get; .github/workflows/scheduled-latest.yml installs the
# newest releases within them every week, without this file. torch is not here: the Makefile's
# TORCH_SPEC pins it (torch==2.13.0), so that a user's own build (CUDA, Apple silicon) is kept.
"""


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for reqs in project["optional-dependencies"].values() for r in reqs]
    pins: dict[str, str] = {}
    done: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        key = (canon(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            print(f"{req.name} is not installed: install the project with all its extras first", file=sys.stderr)
            return 1
        if canon(req.name) != "torch":  # torch is the Makefile's TORCH_SPEC: a user's CUDA / MPS build stays
            pins[canon(req.name)] = f"{dist.metadata['Name']}=={dist.version}"
        for spec in dist.requires or []:
            sub = Requirement(spec)
            for extra in ["", *req.extras]:
                if sub.marker is None or sub.marker.evaluate({**default_environment(), "extra": extra}):
                    todo.append(sub)
                    break
    (ROOT / "constraints.txt").write_text(HEADER + "".join(f"{pins[k]}\n" for k in sorted(pins)))
    print(f"wrote constraints.txt ({len(pins)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
