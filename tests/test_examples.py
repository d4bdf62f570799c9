"""Every script in examples/ runs in its fast mode and writes what it says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
OUTPUTS = {"custom_sde.py": "custom_sde_samples.png", "sde_vs_ode.py": "compare.csv",
           "digits_bpd.py": "digits_samples.png", "digits_conditional.py": "digits_conditional_grid.png"}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES) == sorted(OUTPUTS)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
@pytest.mark.slow
def test_example_runs_in_fast_mode(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), "--fast", "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / OUTPUTS[script.name]).stat().st_size > 0
    assert "wrote" in proc.stdout
