"""One decision for progress bars in every command: --progress / --no-progress, else on only when
stderr is a terminal (logs are not flooded)."""

import argparse
import io

from scoresde.cli import build_parser, main
from scoresde.cli.common import progress_enabled

SHOWS_PROGRESS = {"demo", "train", "sample", "likelihood", "compare", "distill"}


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_the_decision_follows_the_flag_else_the_stream():
    assert progress_enabled(None, _Tty()) is True
    assert progress_enabled(None, io.StringIO()) is False
    assert progress_enabled(None, object()) is False  # a stream without isatty: no bars
    assert progress_enabled(False, _Tty()) is False
    assert progress_enabled(True, io.StringIO()) is True


def test_every_command_with_progress_bars_takes_both_flags():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in SHOWS_PROGRESS:
        p = sub.choices[name]
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--progress", "--no-progress"} <= flags, name
        consts = {s: a.const for a in p._actions for s in a.option_strings if a.dest == "progress"}
        assert consts == {"--progress": True, "--no-progress": False}, name
        assert p.get_default("progress") is None, name  # undecided: the terminal decides


def test_progress_can_be_forced_on_without_a_terminal(tmp_path, capsys):
    argv = ["compare", "--analytic", "ring", "--samplers", "em", "--nfe", "5", "--n", "20", "--out", str(tmp_path)]
    assert main(argv) == 0  # capsys: stderr is not a terminal
    assert "compare samplers" not in capsys.readouterr().err
    assert main([*argv, "--progress"]) == 0
    assert "compare samplers" in capsys.readouterr().err
