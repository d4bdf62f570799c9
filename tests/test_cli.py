"""The `scoresde` command: the demo's self-check passes and errors are one-liners."""

import subprocess
import sys

from scoresde.cli import main


def test_demo_self_check_passes(capsys):
    assert main(["demo", "--paths", "2000"]) == 0
    out = capsys.readouterr().out
    assert "12/12 checks passed" in out


def test_console_entry_point_and_usage_errors():
    proc = subprocess.run([sys.executable, "-m", "scoresde", "demo", "--paths", "many"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid int value: 'many'" in proc.stderr
    assert "Traceback" not in proc.stderr
