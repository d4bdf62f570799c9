"""Every ```python block in README.md and docs/*.md runs as written."""

import pathlib
import re

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


CASES = [(p, i, code) for p in DOCS for i, code in enumerate(python_blocks(p))]


def test_readme_has_runnable_examples():
    assert any(p.name == "README.md" for p, _, _ in CASES)


@pytest.mark.parametrize("path, index, code", CASES, ids=[f"{p.name}-{i}" for p, i, _ in CASES])
def test_code_block_runs(path, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small examples: one thread is as fast and immune to busy shared cores
    try:
        exec(compile(code, f"{path.name}[block {index}]", "exec"), {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)
