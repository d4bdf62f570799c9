"""The `scoresde` command: train -> sample / likelihood / compare, the demo, and its error contract
(one line on stderr, exit status 2, no traceback, nothing half-written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scoresde.cli import main
from scoresde.cli.common import VALID_KEYS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Small models: one thread is as fast and immune to busy shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args, cwd=None, env_extra=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *(env_extra or [])]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "scoresde", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(proc_or_err, needle):
    err = proc_or_err.stderr if hasattr(proc_or_err, "stderr") else proc_or_err
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s" not in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]


def leftovers(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if ".tmp" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny toy run (30 steps): enough to exercise every command on a real checkpoint."""
    out = tmp_path_factory.mktemp("run") / "toy"
    rc = main(["train", "--config", str(ROOT / "configs/toy2d.yaml"), "train.steps=30", "train.batch_size=64",
               "model.hidden=32", "model.depth=1", "train.progress=false", "--out", str(out), "--seed", "3", "--threads", "1"])
    assert rc == 0
    return out


def test_train_writes_a_checkpoint_that_carries_its_config(trained_run):
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["train"]["steps"] == 30 and cfg["train"]["seed"] == 3
    assert cfg["model"]["cli_config"]["model"]["hidden"] == 32
    assert (trained_run / "checkpoints" / "step_00000030.ckpt").is_file()


def test_sample_writes_npz_and_plot_reproducibly(trained_run, tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["sample", "--checkpoint", str(trained_run), "--sampler", "em", "--steps", "20", "--n", "50",
                     "--out", str(tmp_path / f"{name}.npz"), "--plot", str(tmp_path / f"{name}.png"), "--seed", "5"]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["x"].shape == (50, 2) and np.isfinite(a["x"]).all()
    assert int(a["nfe"]) == 21  # 20 steps + the final denoising evaluation
    np.testing.assert_array_equal(a["x"], b["x"])  # same seed, same samples
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert leftovers(tmp_path) == []


def test_likelihood_reports_nll_next_to_the_true_one(trained_run, tmp_path, capsys):
    out = tmp_path / "ll.json"
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "8", "--rtol", "1e-3", "--atol", "1e-3",
                 "--sde-bound", "64", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 8 and np.isfinite(res["nll_nats"]) and np.isfinite(res["true_nll_nats"])
    assert np.isfinite(res["sde_bound_nats"]) and res["sde_bound_samples"] == 64
    printed = capsys.readouterr().out
    assert "true NLL" in printed and "reverse-SDE model: NLL <=" in printed
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "4", "--sde-bound", "-3"]) == 2
    assert "--sde-bound: samples must be an integer >= 1" in capsys.readouterr().err
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "4", "--trace", "hutchinson",
                 "--rtol", "1e-3", "--atol", "1e-3"]) == 0


def test_compare_with_a_checkpoint_adds_the_exact_score(trained_run, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--checkpoint", str(trained_run), "--samplers", "em,dpm_solver", "--nfe", "10,20",
                 "--n", "100", "--out", str(out)]) == 0
    lines = (out / "compare.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2  # (model, exact) x 2 samplers x 2 budgets
    assert {ln.split(",")[0] for ln in lines[1:]} == {"model", "exact"}
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_compare_analytic_nfe_budgets_and_exact_quality(tmp_path):
    """With the exact score, Euler-Maruyama's error falls as the NFE budget grows."""
    out = tmp_path / "cmp"
    assert main(["compare", "--analytic", "ring", "--samplers", "em,heun", "--nfe", "10,200", "--n", "2000",
                 "--out", str(out)]) == 0
    import csv

    rows = list(csv.DictReader(open(out / "compare.csv")))
    em = {int(r["nfe_budget"]): r for r in rows if r["sampler"] == "euler_maruyama"}
    assert abs(int(em[200]["nfe"]) - 200) <= 1 and abs(int(em[10]["nfe"]) - 10) <= 1
    assert float(em[200]["sliced_w2"]) < float(em[10]["sliced_w2"])
    heun = [int(r["nfe"]) for r in rows if r["sampler"] == "heun"]
    assert all(abs(n - b) <= 2 for n, b in zip(heun, [10, 200], strict=True))


def test_custom_sde_class_from_the_command_line(tmp_path):
    (tmp_path / "my_sdes.py").write_text(
        "import scoresde as ss\n\nclass SteepVP(ss.VPSDE):\n    def __init__(self):\n"
        "        super().__init__(beta_min=0.1, beta_max=15.0)\n")
    proc = run_cli("compare", "--analytic", "ring", "--sde", "my_sdes:SteepVP", "--samplers", "em", "--nfe", "10",
                   "--n", "200", "--out", tmp_path / "o", cwd=tmp_path, env_extra=[str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "compare.csv").is_file()
    proc = run_cli("compare", "--analytic", "ring", "--sde", "my_sdes:Nope", "--out", tmp_path / "p",
                   cwd=tmp_path, env_extra=[str(tmp_path)])
    assert proc.returncode == 2
    assert_one_line_error(proc, "has no attribute 'Nope'")


# ---- the error contract --------------------------------------------------------------------
def test_missing_checkpoint(tmp_path):
    proc = run_cli("sample", "--checkpoint", tmp_path / "nope.ckpt", "--out", tmp_path / "s.npz")
    assert proc.returncode == 2
    assert_one_line_error(proc, "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_unknown_config_key_lists_the_valid_ones(tmp_path, capsys):
    assert main(["train", "--config", str(ROOT / "configs/toy2d.yaml"), "train.stepz=5",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "unknown config key 'train.stepz'")
    assert all(k in err for k in VALID_KEYS) and "train.steps" in err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  widht: 3\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert_one_line_error(capsys.readouterr().err, "unknown config key 'model.widht'")
    assert not (tmp_path / "r").exists()


def test_unknown_sampler_lists_the_valid_ones(tmp_path, capsys):
    import scoresde as ss

    assert main(["compare", "--analytic", "ring", "--samplers", "em,leapfrog", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "unknown sampler 'leapfrog'")
    assert all(name in err for name in ss.available_samplers())
    assert not (tmp_path / "c").exists()


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["compare", "--analytic", "ring", "--samplers", "em", "--nfe", "10", "--out", str(blocker / "sub")]) == 2
    assert_one_line_error(capsys.readouterr().err, "cannot write to output folder")
    assert main(["demo", "--budget", "quick", "--out", str(blocker / "report")]) == 2
    assert_one_line_error(capsys.readouterr().err, "cannot write to output folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_usage_errors_exit_2_without_traceback():
    proc = run_cli("sample", "--checkpoint", "x", "--n", "many")
    assert proc.returncode == 2
    assert "invalid int value: 'many'" in proc.stderr and "Traceback" not in proc.stderr


def test_help_explains_every_option(capsys):
    for cmd in ("demo", "train", "sample", "likelihood", "compare"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for opt in ("--seed", "--device"):
            assert opt in text, (cmd, opt)
    # every option of every command has a help string
    from scoresde.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, (name, action.dest)


# ---- the demo ------------------------------------------------------------------------------
def test_demo_quick_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.txt").write_text("old")  # a previous report is replaced as a whole
    assert main(["demo", "--budget", "quick", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "samples.png", "trajectories.png", "compare.png", "compare.csv", "summary.json", "run"} <= names
    assert "stale.txt" not in names and leftovers(tmp_path) == []
    for png in ("samples.png", "trajectories.png", "compare.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    s = json.loads((out / "summary.json").read_text())
    # the PF-ODE with the exact score and exact p_T reproduces the true NLL (solver error only)
    assert abs(s["exact_score_nll"] - s["true_nll"]) < 1e-3
    report = (out / "report.md").read_text()
    assert "![samples vs data](samples.png)" in report and "held-out NLL" in report
    printed = capsys.readouterr().out
    assert "PF-ODE, trained model" in printed and f"wrote {out}/report.md" in printed


def test_selfcheck_passes(capsys):
    assert main(["selfcheck", "--paths", "2000"]) == 0
    assert "12/12 checks passed" in capsys.readouterr().out


def test_comparison_plot_styles_exact_dashed_and_one_colour_per_sampler(tmp_path):
    from scoresde.cli.comparison import plot_comparison

    rows = [{"score": s, "sampler": m, "nfe": n, "sliced_w2": 1.0 / n + (s == "model"), "seconds": 0.01 * n}
            for s in ("model", "exact") for m in ("euler_maruyama", "heun") for n in (10, 100)]
    fig = plot_comparison(rows, tmp_path / "c.png", floor=0.05)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert lines["heun (exact score)"].get_linestyle() == "--" and lines["heun (model score)"].get_linestyle() == "-"
    assert lines["heun (exact score)"].get_color() == lines["heun (model score)"].get_color()
    assert lines["heun (exact score)"].get_color() != lines["euler_maruyama (exact score)"].get_color()
    np.testing.assert_allclose(lines["heun (model score)"].get_ydata(), [1.1, 1.01])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_diverging_training_is_a_one_line_error(tmp_path, capsys):
    """A learning rate that blows the loss up: the Trainer's message, exit 2, no traceback."""
    rc = main(["train", "--config", str(ROOT / "configs/toy2d.yaml"), "train.lr=1e30", "train.steps=50",
               "train.warmup_steps=0", "train.grad_clip=null", "train.progress=false", "model.hidden=8",
               "model.depth=1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    if rc == 0:
        pytest.skip("the loss stayed finite at this learning rate")
    assert rc == 2
    assert_one_line_error(err, "training diverged")
