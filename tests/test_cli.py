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
    assert cfg["model"]["net"] == {"name": "MLP", "kwargs": {"dim": 2, "hidden": 32, "depth": 1, "embedding": "fourier",
                                                            "embedding_dim": 64, "embedding_scale": None, "out_dim": 2}}
    assert cfg["metadata"]["cli"]["model"]["hidden"] == 32 and cfg["metadata"]["cli"]["data"]["name"] == "ring"
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
    assert "--sde-bound must be an integer >= 0, got -3" in capsys.readouterr().err
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "4", "--trace", "hutchinson",
                 "--rtol", "1e-3", "--atol", "1e-3"]) == 0
    capsys.readouterr()
    # several probes: each point's standard error; the exact trace says how its products were taken
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "6", "--trace", "hutchinson", "--probes", "4",
                 "--rtol", "1e-3", "--atol", "1e-3", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["probes"] == 4 and res["point_stderr_median"] > 0
    assert "4 probes" in capsys.readouterr().out
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "4", "--exact-method", "vmap",
                 "--rtol", "1e-3", "--atol", "1e-3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["exact_method"].startswith("vmap")
    capsys.readouterr()
    # the scaled frame (EDM's variables): the same NLL to the solvers' error (measured 1e-4 nats apart at 1e-6)
    nll = {}
    for frame in ("data", "scaled"):
        assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "8", "--frame", frame,
                     "--rtol", "1e-6", "--atol", "1e-6", "--json", str(out)]) == 0
        res = json.loads(out.read_text())
        assert res["frame"] == frame
        nll[frame] = res["nll_nats"]
    assert abs(nll["scaled"] - nll["data"]) < 1e-3
    assert "frame=scaled" in capsys.readouterr().out
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "4", "--probes", "3"]) == 2
    assert "the exact trace has none" in capsys.readouterr().err
    assert main(["likelihood", "--checkpoint", str(trained_run), "--n", "4", "--trace", "hutchinson",
                 "--exact-method", "loop"]) == 2
    assert "--exact-method batches the exact trace's products" in capsys.readouterr().err


def test_compare_with_a_checkpoint_adds_the_exact_score(trained_run, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--checkpoint", str(trained_run), "--samplers", "em,dpm_solver", "--nfe", "10,20",
                 "--n", "100", "--seeds", "2", "--out", str(out)]) == 0
    import csv

    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert len(rows) == 2 * 2 * 2 * 2  # (model, exact) x 2 samplers x 2 budgets x 2 seeds
    assert {r["score"] for r in rows} == {"model", "exact"} and len({r["seed"] for r in rows}) == 2
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_compare_analytic_nfe_budgets_and_exact_quality(tmp_path):
    """With the exact score, Euler-Maruyama's error falls as the NFE budget grows."""
    out = tmp_path / "cmp"
    assert main(["compare", "--analytic", "ring", "--samplers", "em,heun", "--nfe", "10,200", "--n", "2000",
                 "--seeds", "1", "--out", str(out)]) == 0
    import csv

    rows = list(csv.DictReader(open(out / "compare.csv")))
    em = {int(r["nfe_budget"]): r for r in rows if r["sampler"] == "euler_maruyama"}
    assert int(em[200]["nfe"]) == 200 and int(em[10]["nfe"]) == 10  # 1 per step + the denoising one
    assert float(em[200]["sliced_w2"]) < float(em[10]["sliced_w2"])
    heun = [int(r["nfe"]) for r in rows if r["sampler"] == "heun"]
    assert heun == [9, 199]  # 2 per step + 1: the most steps within each budget, never over it


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
    assert_one_line_error(capsys.readouterr().err, f"cannot write to --out {str(blocker / 'sub')!r}: Not a directory")
    assert main(["demo", "--budget", "quick", "--out", str(blocker / "report")]) == 2
    assert_one_line_error(capsys.readouterr().err, f"the folder of --out {str(blocker)!r} exists and is not a folder")
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
    # the comparison's words: the noise, and one generated verdict per measure x score x budget
    assert "How large the noise is" in report and "mean + 2 s.e." in report
    assert sum(line.startswith(("- sliced W2, ", "- |dispersion - 1|, ")) for line in report.splitlines()) == 2 * 2 * 2
    printed = capsys.readouterr().out
    assert "PF-ODE, trained model" in printed and f"wrote {out}/report.md" in printed


def test_selfcheck_passes(capsys):
    assert main(["selfcheck", "--paths", "2000"]) == 0
    assert "12/12 checks passed" in capsys.readouterr().out


def test_comparison_plot_means_over_seeds_one_panel_row_per_score_legend_outside(tmp_path):
    from scoresde.cli.comparison import plot_comparison

    rows = [{"score": s, "sampler": m, "nfe_budget": n, "nfe": n, "seed": k, "seconds": 0.01,
             "sliced_w2": 1.0 / n + (s == "model") + 0.01 * k}
            for s in ("model", "exact") for m in ("euler_maruyama", "heun", "pc") for n in (10, 100) for k in range(3)]
    fig = plot_comparison(rows, tmp_path / "c.png", floor={"sliced_w2": [0.02, 0.05]}, max_curves=2)
    model_ax, exact_ax = fig.axes  # one metric (no mixture numbers), two scores: separate panels
    assert model_ax.get_title().startswith("model score") and exact_ax.get_title().startswith("exact score")
    lines = {ln.get_label(): ln for ln in model_ax.get_lines()}
    assert set(lines) == {"euler_maruyama", "heun"}  # max_curves: the two best by mean sliced W2 (pc ties, last)
    np.testing.assert_allclose(lines["heun"].get_ydata(), [1.11, 1.02])  # the mean over the seeds
    assert len(model_ax.collections) == 2  # a +-2 s.e. band per curve
    assert any(abs(p.get_extents().height) > 0 for p in model_ax.patches)  # the noise-floor band
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(legend.x0 >= ax.get_window_extent().x1 for ax in fig.axes)  # off the data
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sampler_is_better_only_beyond_two_standard_errors_each():
    from scoresde.cli.comparison import better, summarise

    def rows(name, values):
        return [{"score": "exact", "sampler": name, "nfe_budget": 10, "nfe": 10, "seconds": 0.0, "sliced_w2": v}
                for v in values]

    a, b, c = summarise(rows("a", [0.10, 0.11, 0.12]) + rows("b", [0.20, 0.21, 0.22]) + rows("c", [0.08, 0.3, 0.15]))
    assert a["sliced_w2_se"] == pytest.approx(0.01 / 3**0.5)
    assert better(a, b) and not better(b, a)
    assert not better(a, c) and not better(c, b)  # c's spread covers both
    (one,) = summarise(rows("d", [0.01]))
    assert not better(one, b)  # one seed: no standard error, no claim


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


# ---- run folders: refusals that leave every byte in place -----------------------------------
TRAIN = ["train", "--config", str(ROOT / "configs/toy2d.yaml"), "train.steps=30", "train.batch_size=64",
         "model.hidden=32", "model.depth=1", "train.progress=false", "--seed", "3", "--threads", "1"]


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(Path(folder).rglob("*"))}


@pytest.fixture
def run_copy(trained_run, tmp_path):
    import shutil

    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def test_train_into_a_folder_that_holds_a_run_is_refused(run_copy, capsys):
    before = snapshot(run_copy)
    assert main([*TRAIN, "--out", str(run_copy)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"run folder {str(run_copy)!r} already holds a run")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("override, needle", [
    ("model.hidden=64", "model.net.kwargs.hidden: 32 -> 64"),
    ("train.lr=0.05", "train.lr: 0.002 -> 0.05"),
    ("data.seed=9", "metadata.cli.data.seed: 1 -> 9"),
    ("train.steps=60", "train.steps: 30 -> 60"),  # the cosine schedule decays over `steps`
])
def test_resume_with_a_changed_config_refuses_and_touches_nothing(run_copy, capsys, override, needle):
    before = snapshot(run_copy)
    assert main([*TRAIN, "--out", str(run_copy), "--resume", override]) == 2  # an override after the options too
    err = capsys.readouterr().err
    assert_one_line_error(err, needle)
    assert "cannot resume run folder" in err
    assert snapshot(run_copy) == before


def test_resume_may_change_logging_and_records_it(run_copy, capsys):
    assert main([*TRAIN, "--out", str(run_copy), "--resume", "train.log_every=7", "train.keep_checkpoints=5"]) == 0
    assert "resumed at step 30" in capsys.readouterr().out
    assert json.loads((run_copy / "config.json").read_text())["train"]["log_every"] == 7


# ---- load_run behind every command ------------------------------------------------------------
def test_load_run_round_trips_a_cli_run_and_sample_uses_it(trained_run, tmp_path):
    import torch

    import scoresde as ss
    from scoresde.cli.common import score_fn_for
    from scoresde.distributed_sampling import sample_seeds
    from scoresde.training import load_checkpoint

    run = ss.load_run(trained_run)
    assert run.step == 30 and run.data_shape == (2,) and run.metadata["cli"]["data"]["name"] == "ring"
    # the same model built by hand from the file's EMA weights
    torch.manual_seed(0)
    by_hand = ss.ScoreModel(ss.MLP(2, 32, 1), ss.VPSDE(0.1, 20.0), data_std=4.0)
    by_hand.load_state_dict(load_checkpoint(trained_run / "checkpoints" / "step_00000030.ckpt")["ema"]["model"])
    x, t = torch.randn(8, 2), torch.linspace(0.1, 1.0, 8)
    with torch.no_grad():
        assert torch.equal(run.model(x, t), by_hand.eval()(x, t))
    assert main(["sample", "--checkpoint", str(trained_run), "--sampler", "em", "--steps", "20", "--n", "50",
                 "--out", str(tmp_path / "a.npz"), "--seed", "5"]) == 0
    # sample i is seeded by sample_seed(5, i); 50 samples are one chunk of the default --batch-size
    seeds = sample_seeds(5, 50)
    res = ss.sample(score_fn_for(run.model), run.sde, (50, 2), sampler="euler_maruyama", steps=20, seed=seeds)
    saved = np.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(saved["x"], res.x.numpy())
    assert saved["seeds"].tolist() == seeds and str(saved["seeding"]) == "per_sample" and int(saved["world_size"]) == 1


def test_a_run_trained_through_the_python_api_serves_every_command(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    import scoresde as ss
    from scoresde.distributed_sampling import sample_seeds

    sde = ss.VPSDE(schedule="cosine")
    torch.manual_seed(0)
    model = ss.ScoreModel(ss.MLP(2, 16, 1), sde, data_std=4.0)
    trainer = ss.Trainer(model, ss.DSMLoss(sde), ss.MixtureDataset(ss.analytic.ring_mixture(), 500, seed=0),
                         tmp_path / "api", steps=20, batch_size=64, progress=False).fit()
    assert main(["sample", "--checkpoint", str(tmp_path / "api"), "--sampler", "dpm_solver", "--steps", "5", "--n", "20",
                 "--out", str(tmp_path / "s.npz"), "--seed", "1"]) == 0
    run = ss.load_run(tmp_path / "api")
    with torch.no_grad():
        want = ss.sample(run.model, run.sde, (20, 2), sampler="dpm_solver", steps=5, seed=sample_seeds(1, 20)).x
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["x"], want.numpy())
    assert main(["likelihood", "--checkpoint", str(tmp_path / "api"), "--n", "3", "--rtol", "1e-3", "--atol", "1e-3"]) == 2
    assert_one_line_error(capsys.readouterr().err, "records no data set (not trained by `scoresde train`): pass --data")
    assert main(["likelihood", "--checkpoint", str(tmp_path / "api"), "--data", "ring", "--n", "3", "--rtol", "1e-3",
                 "--atol", "1e-3", "--json", str(tmp_path / "ll.json")]) == 0
    assert np.isfinite(json.loads((tmp_path / "ll.json").read_text())["nll_nats"])
    assert main(["compare", "--checkpoint", str(tmp_path / "api"), "--data", "ring", "--samplers", "em", "--nfe", "5",
                 "--n", "50", "--out", str(tmp_path / "cmp")]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "api"), "--out", str(tmp_path / "w.safetensors")]) == 0
    tensors = load_file(str(tmp_path / "w.safetensors"))
    ema = trainer.ema.model.state_dict()
    assert tensors.keys() == ema.keys() and all(torch.equal(tensors[k], ema[k]) for k in ema)
    assert main(["export", "--checkpoint", str(tmp_path / "api"), "--out", str(tmp_path / "raw.safetensors"), "--raw"]) == 0
    raw = load_file(str(tmp_path / "raw.safetensors"))
    assert all(torch.equal(raw[k], v) for k, v in trainer.model.state_dict().items())
    assert leftovers(tmp_path) == []


# ---- every command's mistakes: one line naming the argument, exit 2, before any expensive work
BAD_INVOCATIONS = [
    (["sample", "--checkpoint", "{run}", "--option", "foo=1"], "--option foo: sampler 'euler_maruyama' has no option 'foo'"),
    (["sample", "--checkpoint", "{run}", "--sampler", "pc", "--option", "snrr=0.1"], "has no option 'snrr'; its options are: "),
    (["sample", "--checkpoint", "{run}", "--sampler", "pc", "--option", "snr=-1"], "--option: sampler 'pc': snr must be"),
    (["sample", "--checkpoint", "{run}", "--option", "novalue"], "--option must look like name=value"),
    (["sample", "--checkpoint", "{run}", "--n", "0"], "--n must be an integer >= 1, got 0"),
    (["sample", "--checkpoint", "{run}", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["sample", "--checkpoint", "{run}", "--steps", "-5"], "--steps must be an integer >= 1, got -5"),
    (["sample", "--checkpoint", "{run}", "--seed", "-1"], "--seed must be an integer in [0, "),
    (["sample", "--checkpoint", "{run}", "--device", "cuda:7"], "--device='cuda:7'"),
    (["sample", "--checkpoint", "{run}", "--device", "gpu"], "--device must be a device such as 'cpu'"),
    (["sample", "--checkpoint", "{tmp}/nope"], "does not exist"),
    (["sample", "--checkpoint", "{tmp}/notes.txt"], "is not a scoresde checkpoint"),
    (["sample", "--checkpoint", "{tmp}/empty"], "holds no checkpoint"),
    (["sample", "--checkpoint", "{other_arch}"], "holds the weights of another architecture"),
    (["sample", "--checkpoint", "{run}", "--out", "{tmp}"], "is a folder; give a file name"),
    (["sample", "--checkpoint", "{run}", "--out", "{tmp}/notes.txt/s.npz"], "exists and is not a folder"),
    (["sample", "--checkpoint", "{run}", "--plot", "{tmp}/p.xyz"], "unsupported image type '.xyz'"),
    (["sample", "--checkpoint", "{run}", "--sde", "nomodule_xyz:X"], "cannot import module 'nomodule_xyz'"),
    (["sample", "--checkpoint", "{run}", "--sde", "vpp"], "--sde must be a built-in name or look like"),
    (["sample", "--checkpoint", "{run}", "--sde", "scoresde:MLP"], "is not a subclass of scoresde.SDE"),
    (["likelihood", "--checkpoint", "{run}", "--n", "-1"], "--n must be an integer >= 0, got -1"),
    (["likelihood", "--checkpoint", "{run}", "--rtol", "2"], "--rtol must be a number in (0, 1), got 2.0"),
    (["likelihood", "--checkpoint", "{run}", "--chunk-size", "0"], "--chunk-size must be an integer >= 1"),
    (["likelihood", "--checkpoint", "{run}", "--sde-bound", "-3"], "--sde-bound must be an integer >= 0, got -3"),
    (["likelihood", "--checkpoint", "{run}", "--data", "{tmp}/missing.npz"], "missing.npz' does not exist"),
    (["likelihood", "--checkpoint", "{run}", "--data", "{tmp}/bad.npz"], "is not a readable .npz/.npy array file"),
    (["likelihood", "--checkpoint", "{run}", "--data", "{tmp}/three.npz"], "has samples of shape (3,), but the model "
                                                                             "was trained on shape (2,)"),
    (["likelihood", "--checkpoint", "{run}", "--data", "moons3"], "unknown --data 'moons3'"),
    (["likelihood", "--checkpoint", "{run}", "--json", "{tmp}"], "--json"),
    (["compare", "--analytic", "ring", "--n", "0"], "--n must be an integer >= 1, got 0"),
    (["compare", "--analytic", "ring", "--nfe", "0,10"], "--nfe must be a comma-separated list of positive integers"),
    (["compare", "--analytic", "ringg"], "unknown --analytic 'ringg'"),
    (["compare"], "give exactly one of --checkpoint"),
    (["compare", "--analytic", "ring", "--out", "{tmp}/notes.txt"], "exists and is not a folder"),
    (["compare", "--analytic", "ring", "--samplers", ","], "--samplers must name at least one sampler"),
    (["compare", "--checkpoint", "{run}", "--data", "{tmp}/missing.npz"], "missing.npz' does not exist"),
    (["selfcheck", "--paths", "0"], "--paths must be an integer >= 1, got 0"),
    (["selfcheck", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
    (["train", "model.hidden=abc"], "model.hidden must be an integer >= 1, got 'abc'"),
    (["train", "train.betas=0.9"], "train.betas must be a pair (beta1, beta2)"),
    (["train", "train.steps=-1"], "train.steps must be an integer >= 1, got -1"),
    (["train", "train.lr=fast"], "train.lr must be a positive number, got 'fast'"),
    (["train", "data.n=0"], "data.n must be an integer >= 1, got 0"),
    (["train", "model.channel_mults=[1,x]"], "model.channel_mults[1] must be an integer >= 1"),
    (["train", "loss.weighting=l2"], "loss.weighting must be one of 'sigma2', 'likelihood'"),
    (["train", "sde.kwargs.foo=1"], "sde.kwargs.foo: VPSDE has no argument 'foo'; its arguments are: schedule"),
    (["train", "sde.kwargs.eps=5"], "sde 'vp': eps must be a number in (0, 1)"),
    (["train", "sde.kwargs.beta_min=1"], "sde.kwargs.beta_min repeats an argument"),
    (["train", "sde.name=evil_mod:Evil"], "a class to import is taken only from the command line: --sde evil_mod:Evil"),
    (["train", "data.name=nope"], "unknown data.name 'nope'"),
    (["train", "data.name={tmp}/three.npz", "model.net=unet"], "model.net 'unet' needs square images"),
    (["train", "--config", "{tmp}"], "is not a file"),
    (["train", "--config", "{tmp}/bad.npz"], "is not"),
    (["train", "--config", "{tmp}/list.yaml"], "must hold a mapping of keys"),
    (["train", "--out", "{tmp}/notes.txt"], "is a file, not a folder"),
    (["train", "--device", "cuda:3"], "device='cuda:3'"),
    (["train", "--seed", "-2"], "--seed must be an integer in [0, "),
    (["train", "--sde", "nomodule_xyz:X"], "cannot import module 'nomodule_xyz'"),
    (["export", "--checkpoint", "{run}", "--out", "{tmp}/w.bin"], "must end in .safetensors"),
    (["export", "--checkpoint", "{tmp}/nope", "--out", "{tmp}/w.safetensors"], "does not exist"),
    (["demo", "--seed", "-1", "--out", "{tmp}/demo"], "--seed must be an integer in [0, "),
    (["demo", "--threads", "0", "--out", "{tmp}/demo"], "--threads must be an integer >= 1, got 0"),
    (["demo", "--out", "{tmp}/notes.txt"], "exists and is not a folder"),
]


@pytest.fixture
def mistakes(trained_run, tmp_path, monkeypatch):
    """Files for the bad invocations; and every expensive step replaced by a failure, so that a
    check made only after the work (likelihood --sde-bound -3 used to compute first) shows."""
    import torch

    from scoresde.cli import commands
    from scoresde.training import Trainer, load_checkpoint, save_checkpoint

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.npz").write_bytes(b"\x00\x01 not an npz")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    np.savez(tmp_path / "three.npz", x=np.zeros((10, 3), dtype=np.float32))
    state = load_checkpoint(trained_run / "checkpoints" / "step_00000030.ckpt")
    config = json.loads(state["config_json"])
    config["model"]["net"]["kwargs"]["hidden"] = 64  # weights of hidden=32 under a config that says 64
    save_checkpoint({**state, "config_json": json.dumps(config)}, tmp_path / "other.ckpt")

    def expensive(*args, **kwargs):
        raise AssertionError("expensive work started before the arguments were checked")

    for name in ("sample_in_chunks", "log_likelihood", "nll_bound", "run_comparison"):
        monkeypatch.setattr(commands, name, expensive)
    monkeypatch.setattr(Trainer, "fit", expensive)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return {"run": str(trained_run), "tmp": str(tmp_path), "other_arch": str(tmp_path / "other.ckpt")}


@pytest.mark.parametrize("argv, needle", BAD_INVOCATIONS, ids=[" ".join(a)[:60] for a, _ in BAD_INVOCATIONS])
def test_every_mistake_is_one_line_naming_the_argument(mistakes, capsys, argv, needle):
    argv = [a.format(**mistakes) for a in argv]
    needle = needle.format(**mistakes)
    if argv[0] == "train":
        argv += ["--out", mistakes["tmp"] + "/trained"] if "--out" not in argv else []
    elif argv[0] == "sample" and "--out" not in argv:
        argv += ["--out", mistakes["tmp"] + "/s.npz"]
    elif argv[0] == "compare" and "--out" not in argv:
        argv += ["--out", mistakes["tmp"] + "/cmp"]
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, needle)
    tmp = Path(mistakes["tmp"])
    assert not (tmp / "trained").exists() and not (tmp / "s.npz").exists() and not (tmp / "cmp" / "compare.csv").exists()


# ---- progress bars --------------------------------------------------------------------------
def test_progress_bars_can_be_turned_off_and_are_off_without_a_terminal(trained_run, tmp_path, capsys, monkeypatch):
    cases = [(["sample", "--checkpoint", str(trained_run), "--steps", "5", "--n", "10", "--out", str(tmp_path / "s.npz")],
              "sample["),
             (["likelihood", "--checkpoint", str(trained_run), "--n", "2", "--rtol", "1e-2", "--atol", "1e-2"],
              "log-likelihood"),
             (["compare", "--analytic", "ring", "--samplers", "em", "--nfe", "5", "--n", "20", "--out", str(tmp_path / "c")],
              "compare samplers"),
             ([*TRAIN[:-4], "train.steps=3", "train.progress=true", "--out", str(tmp_path / "t")], "training")]
    for argv, bar in cases:
        assert main(argv) == 0  # capsys: stderr is not a terminal
        assert bar not in capsys.readouterr().err
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        if argv[0] == "train":
            argv = [*argv[:-1], str(tmp_path / "t2")]
        assert main(argv) == 0
        assert bar in capsys.readouterr().err, argv[0]
        if argv[0] == "train":
            argv = [*argv[:-1], str(tmp_path / "t3")]
        assert main([*argv, "--no-progress"]) == 0
        assert bar not in capsys.readouterr().err, argv[0]
        monkeypatch.undo()


# ---- outputs never follow a planted link ----------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX links")
def test_outputs_replace_links_and_stale_temporaries_go(trained_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (out / "s.npz").symlink_to(victim)
    pid = os.getpid()
    for name in (f".s.tmp-{pid}.npz", f".s.png.tmp-{pid}", f".s.tmp-{pid}.png"):  # the old scheme's names
        (out / name).symlink_to(victim)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale, live = out / f".s.npz.tmp-{proc.pid}-abc123", out / f".s.npz.tmp-{os.getppid()}-def456"
    stale.write_bytes(b"\0" * 1000)  # left by a sample killed mid-write
    live.write_bytes(b"\0" * 10)  # another process writing the same output right now
    assert main(["sample", "--checkpoint", str(trained_run), "--steps", "5", "--n", "10", "--out", str(out / "s.npz"),
                 "--plot", str(out / "s.png")]) == 0
    assert victim.read_text() == "precious"
    assert not (out / "s.npz").is_symlink() and np.load(out / "s.npz")["x"].shape == (10, 2)
    assert not stale.exists() and live.exists()


# ---- nothing read from a file decides what is imported --------------------------------------
EVIL = "from pathlib import Path\nPath(__file__).with_name('IMPORTED').write_text('ran')\nclass Evil:\n    pass\n"


@pytest.mark.slow
def test_files_never_cause_an_import_and_a_custom_sde_comes_from_the_command_line(trained_run, tmp_path):
    import scoresde as ss
    from scoresde.training import load_checkpoint, save_checkpoint

    (tmp_path / "evil_mod.py").write_text(EVIL)  # in the working directory: `python -m` would find it
    (tmp_path / "my_sdes.py").write_text(
        "import scoresde as ss\n\nclass SteepVP(ss.VPSDE):\n    def __init__(self, beta_max=15.0):\n"
        "        super().__init__(beta_min=0.1, beta_max=beta_max)\n")
    state = load_checkpoint(trained_run / "checkpoints" / "step_00000030.ckpt")
    config = json.loads(state["config_json"])
    config["model"]["sde"] = {"name": "evil_mod:Evil", "kwargs": {}}
    save_checkpoint({**state, "config_json": json.dumps(config)}, tmp_path / "crafted.ckpt")
    (tmp_path / "evil.yaml").write_text("sde:\n  name: evil_mod:Evil\n")

    proc = run_cli("sample", "--checkpoint", "crafted.ckpt", "--out", "s.npz", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "the SDE spec names 'evil_mod:Evil', not one of the built-in")
    proc = run_cli("train", "--config", "evil.yaml", "--out", "r", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "a class to import is taken only from the command line: --sde evil_mod:Evil")
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "r").exists()

    # a user's SDE class: named on the command line when training and when loading
    proc = run_cli(*TRAIN[:-4], "train.steps=5", "sde.kwargs.beta_max=12.0", "--sde", "my_sdes:SteepVP", "--out", "ramp",
                   cwd=tmp_path, env_extra=[str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("sample", "--checkpoint", "ramp", "--steps", "5", "--n", "10", "--out", "s.npz", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "the SDE is 'my_sdes:SteepVP', which is not built in")
    assert "--sde" in proc.stderr
    proc = run_cli("sample", "--checkpoint", "ramp", "--steps", "5", "--n", "10", "--out", "s.npz",
                   "--sde", "my_sdes:SteepVP", cwd=tmp_path, env_extra=[str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        import my_sdes

        run = ss.load_run(tmp_path / "ramp", sde=my_sdes.SteepVP(beta_max=12.0))
        assert run.config["metadata"]["cli"]["sde"]["kwargs"] == {"beta_max": 12.0}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_sdes", None)
    assert not (tmp_path / "IMPORTED").exists()


def test_built_in_sde_names_and_their_kwargs_reach_the_constructors(tmp_path, capsys):
    """`compare --analytic ring --sde vp` used to fail with KeyError 'beta_min'; sde.kwargs were
    ignored for the built-in SDEs."""
    for name in ("vp", "vp_cosine", "subvp", "ve"):
        assert main(["compare", "--analytic", "ring", "--sde", name, "--samplers", "em", "--nfe", "5", "--n", "20",
                     "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
    assert main([*TRAIN[:-4], "train.steps=2", "--sde", "vp_cosine", "sde.kwargs.eps=1e-3",
                 "--out", str(tmp_path / "run")]) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["sde"]
    assert recorded["name"] == "VPSDE" and recorded["kwargs"]["schedule"] == "cosine" and recorded["kwargs"]["eps"] == 1e-3


# ---- --diffusers: a diffusers folder instead of a run ---------------------------------------------
@pytest.fixture(scope="module")
def diffusers_dir(tmp_path_factory):
    """A random-weight 4x4 UNet2DModel and a DDPMScheduler written with save_pretrained (pipeline
    layout), and 256-level 4x4 images to measure it on."""
    diffusers = pytest.importorskip("diffusers")
    import torch

    root = tmp_path_factory.mktemp("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=4, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    unet.save_pretrained(root / "model" / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_pretrained(root / "model" / "scheduler")
    np.savez(root / "images.npz", x=np.random.default_rng(0).integers(0, 256, (6, 4, 4), dtype=np.uint8))
    np.savez(root / "points.npz", x=np.zeros((6, 2), dtype=np.float32))
    return root


def test_a_diffusers_folder_serves_sample_likelihood_and_compare(diffusers_dir, tmp_path, capsys):
    model, images = str(diffusers_dir / "model"), str(diffusers_dir / "images.npz")
    assert main(["sample", "--diffusers", model, "--sampler", "dpm_solver", "--steps", "4", "--n", "3",
                 "--out", str(tmp_path / "s.npz")]) == 0
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (3, 1, 4, 4) and np.isfinite(x).all()
    assert main(["likelihood", "--diffusers", model, "--data", images, "--n", "2", "--trace", "exact",
                 "--rtol", "1e-3", "--atol", "1e-3", "--json", str(tmp_path / "ll.json")]) == 0
    out = capsys.readouterr().out
    assert "2 points of" in out and "bits/dim" in out and "256 levels on [-1, 1]" in out
    numbers = json.loads((tmp_path / "ll.json").read_text())
    assert np.isfinite(numbers["bits_per_dim"]) and numbers["bits_per_dim"] > 0
    assert main(["compare", "--diffusers", model, "--data", images, "--samplers", "dpm_solver,em", "--nfe", "3",
                 "--n", "4", "--seeds", "1", "--out", str(tmp_path / "cmp")]) == 0
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("model,dpm_solver,3")


def test_diffusers_mistakes_are_one_line_naming_them(diffusers_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from scoresde.cli import commands

    def expensive(*args, **kwargs):
        raise AssertionError("expensive work started before the arguments were checked")

    for name in ("sample_in_chunks", "log_likelihood", "run_comparison"):
        monkeypatch.setattr(commands, name, expensive)
    model = str(diffusers_dir / "model")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(diffusers_dir / "model", no_weights)
    (no_weights / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    odd = tmp_path / "odd"
    shutil.copytree(diffusers_dir / "model", odd)
    config = json.loads((odd / "scheduler" / "scheduler_config.json").read_text())
    (odd / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "prediction_type": "flow"}))
    (tmp_path / "empty").mkdir()
    out = ["--out", str(tmp_path / "s.npz")]
    cases = [
        (["sample", *out], "give --checkpoint (a scoresde run) or --diffusers DIR"),
        (["sample", "--diffusers", model, "--checkpoint", model, *out], "not both"),
        (["sample", "--diffusers", str(tmp_path / "nope"), *out], "does not exist or is not a folder"),
        (["sample", "--diffusers", str(tmp_path / "empty"), *out], "holds no diffusers UNet"),
        (["sample", "--diffusers", str(no_weights), *out], "holds no safetensors weights"),
        (["sample", "--diffusers", str(odd), *out], "prediction_type must be one of 'epsilon'"),
        (["sample", "--diffusers", model, "--sde", "vp", *out], "--sde does not apply to --diffusers"),
        (["likelihood", "--diffusers", model], "records no data set (not trained by `scoresde train`): pass --data"),
        (["likelihood", "--diffusers", model, "--data", str(diffusers_dir / "points.npz")],
         "has samples of shape (2,), but the model was trained on shape (1, 4, 4)"),
        (["compare", "--diffusers", model, "--analytic", "ring", "--out", str(tmp_path / "c")], "give exactly one of"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        assert_one_line_error(capsys.readouterr().err, needle)
    assert not (tmp_path / "s.npz").exists()


def test_comparison_claims_from_one_set_of_seeds_are_not_reversed_by_another():
    """The demo's rule (better only beyond 2 s.e. each) on exact-score runs: what seeds 0-3 call
    better, disjoint seeds never call worse."""
    import torch

    from scoresde import VPSDE, analytic
    from scoresde.cli.comparison import METRICS, better, run_comparison, summarise

    gmm, sde = analytic.ring_mixture(), VPSDE()
    score = gmm.to(dtype=torch.float32).score_fn(sde)
    samplers, nfes = ["euler_maruyama", "heun", "dpm_solver"], [10, 50]

    def verdicts(base):
        seeds = [base + 100 * k for k in range(4)]
        refs = [gmm.sample(500, generator=torch.Generator().manual_seed(s + 7)) for s in seeds]
        summ = summarise(run_comparison({"exact": score}, sde, (500, 2), samplers, nfes, refs, gmm=gmm, seeds=seeds,
                                        progress=False))
        rows = {(r["sampler"], r["nfe_budget"]): r for r in summ}
        return {(m, n, a, b): better(rows[a, n], rows[b, n], m)
                for m in METRICS for n in nfes for a in samplers for b in samplers if a != b}

    first, second = verdicts(0), verdicts(10_000)
    claims = [k for k, v in first.items() if v]
    assert len(claims) >= 5  # the rule does separate samplers (e.g. Heun at 10 NFE)
    assert not [(m, n, a, b) for m, n, a, b in claims if second[m, n, b, a]]
