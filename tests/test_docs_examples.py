"""Every ```python block in README.md and docs/**/*.md runs as written; every `scoresde ...` line of a
```bash block parses with the real command-line parser (commands and options exist)."""

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


@pytest.mark.parametrize("path, index, code", CASES, ids=[f"{p.relative_to(ROOT)}-{i}" for p, i, _ in CASES])
def test_code_block_runs(path, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small examples: one thread is as fast and immune to busy shared cores
    try:
        exec(compile(code, f"{path.name}[block {index}]", "exec"), {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)


def cli_lines(path):
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("scoresde "):
                lines.append(line)
    return lines


CLI_CASES = [(p, line) for p in DOCS for line in cli_lines(p)]


def test_docs_show_the_command_line():
    assert len(CLI_CASES) >= 10


@pytest.mark.parametrize("path, line", CLI_CASES, ids=[f"{p.relative_to(ROOT)}:{line[:40]}" for p, line in CLI_CASES])
def test_documented_command_parses(path, line):
    import shlex

    from scoresde.cli import build_parser

    args = build_parser().parse_args(shlex.split(line)[1:])  # argparse exits (SystemExit) on a bad option
    assert callable(args.run)


def test_api_reference_is_up_to_date():
    """docs/api.md is generated from the docstrings (python docs/gen_api.py); regenerate after API changes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render()
    assert "### `scoresde.sampling.sample(" in text and "### `scoresde.likelihood.log_likelihood(" in text
    assert (ROOT / "docs" / "api.md").read_text() == text, "docs/api.md is stale: run python docs/gen_api.py"
