r"""Plain-text ``--help``: the descriptions reuse module docstrings written for the docs site, so
their reStructuredText (roles, literals, math) is turned into plain text before printing."""

from __future__ import annotations

import argparse
import re
import textwrap

_ROLE = re.compile(r":(?:py:)?(\w+):`([^`]+)`")
_TARGET = re.compile(r"^(.*?)\s*<[^>]+>$")  # :func:`text <target>`
_LATEX_CMD = re.compile(r"\\([A-Za-z]+)")
_LIST_ITEM = re.compile(r"^\s*(?:\d+\.|[-*])\s")


def _latex(s: str) -> str:
    s = re.sub(r"\\[,;!: ]", " ", s)  # LaTeX spacing
    s = _LATEX_CMD.sub(r"\1", s)  # \log p_0 -> log p_0
    return s.replace("{", "").replace("}", "")


def _role(m: re.Match) -> str:
    role, body = m.group(1), m.group(2)
    if role == "math":
        return _latex(body)
    t = _TARGET.match(body)
    if t:  # explicit title
        return t.group(1)
    return body.lstrip("~").rsplit(".", 1)[-1] if body.startswith("~") else body


def plain_text(text: str) -> str:
    """``text`` with reStructuredText markup replaced by what a terminal shows as is."""
    text = _ROLE.sub(_role, text)
    lines, in_math = [], False
    for line in text.splitlines():
        directive = re.match(r"^(\s*)\.\. ([\w-]+)::\s*(.*)$", line)
        if directive:  # `.. math::` and friends: keep only an inline argument
            in_math = directive.group(2) == "math"
            if directive.group(3):
                lines.append(directive.group(1) + "    " + _latex(directive.group(3)))
            continue
        if line.strip() and not line[:1].isspace():
            in_math = False
        lines.append(_latex(line) if in_math else line)
    text = "\n".join(lines)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_?", r"'\1'", text)  # single backquotes (markdown code / rst refs)
    text = re.sub(r"(?<![\w*])\*\*([^*\n]+)\*\*(?![\w*])", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([A-Za-z][^*\n]*?)\*(?![\w*])", r"\1", text)
    return text.replace("::\n", ":\n")


class PlainHelpFormatter(argparse.HelpFormatter):
    """Markup-free help: prose paragraphs are re-wrapped to the terminal, indented blocks and
    lists keep their lines (argparse's RawDescriptionHelpFormatter keeps everything, so long
    one-line descriptions ran off the screen)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in re.split(r"\n\s*\n", plain_text(text).strip("\n")):
            lines = para.splitlines()
            if any(ln[:1].isspace() or _LIST_ITEM.match(ln) for ln in lines):
                out.append("\n".join(indent + ln for ln in lines))
            else:
                out.append(textwrap.fill(" ".join(ln.strip() for ln in lines), width,
                                         initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(out)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return super()._split_lines(plain_text(text), width)
