"""``scoresde <command> --help`` is plain text: no reStructuredText from reused docstrings."""

import argparse
import re

import pytest

from scoresde.cli import build_parser, main
from scoresde.cli.helptext import plain_text

# roles (:func:`x`), literals (``x``), any backquote, directives (.. math::), LaTeX commands (\log)
MARKUP = re.compile(r"`|:(math|func|class|meth|data|mod|attr|exc|ref):|^\s*\.\. |\\[A-Za-z]+", re.M)


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_the_command_list_is_read_from_the_parser():
    assert {"demo", "train", "sample", "likelihood", "compare", "fit-grid", "distill", "export", "selfcheck"} <= set(
        _commands())


@pytest.mark.parametrize("argv", [[], *[[c] for c in _commands()]], ids=lambda a: a[0] if a else "scoresde")
def test_help_has_no_markup(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage:")
    found = [m.group(0) for m in MARKUP.finditer(text)]
    assert not found, f"{' '.join(argv) or 'scoresde'} --help shows markup {found}:\n{text}"


def test_plain_text_of_roles_literals_and_math():
    doc = (r"Uses :func:`~scoresde.sampling.sample` and :class:`the SDE <scoresde.SDE>`, ``steps`` and"
           "\n:math:`\\log p_0`:\n\n.. math::\n\n   \\nabla_x \\log p_t(x)\n")
    out = plain_text(doc)
    assert "Uses sample and the SDE, steps and\nlog p_0:" in out
    assert "nabla_x log p_t(x)" in out and ".." not in out and "\\" not in out
