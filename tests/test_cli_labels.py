"""The command line's class labels: `train` with model.num_classes / loss.label_dropout and
`sample --label K --guidance W`, with one-line errors for every mistake."""

import json

import numpy as np
import pytest
import torch

import scoresde as ss
from scoresde.cli import main


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """The ring mixture with its 8 components as classes: 300 steps, label dropout 0.2."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "ring"
    rc = main(["train", "--out", str(out), "model.num_classes=8", "loss.label_dropout=0.2", "train.steps=300",
               "train.batch_size=256", "train.lr=0.003", "model.data_std=4.0", "train.progress=false"])
    torch.set_num_threads(threads)
    assert rc == 0
    return out


def _error(capsys, argv):
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow
def test_a_conditional_run_records_its_classes_and_samples_its_labels(conditional_run, tmp_path):
    cfg = json.loads((conditional_run / "config.json").read_text())
    assert cfg["model"]["num_classes"] == 8 and cfg["loss"]["label_dropout"] == 0.2
    assert cfg["metadata"]["cli"]["model"]["num_classes"] == 8
    out = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(conditional_run), "--label", "3,6", "--guidance", "2", "--n", "400",
                 "--sampler", "dpm_solver", "--steps", "20", "--out", str(out), "--no-progress"]) == 0
    saved = np.load(out)
    assert saved["labels"].tolist() == [3, 6] * 200 and float(saved["guidance"]) == 2.0
    gmm = ss.analytic.ring_mixture()
    hit = ss.metrics.assign(torch.from_numpy(saved["x"]).double(), gmm).numpy() == saved["labels"]
    assert hit.mean() > 0.9  # measured 1.0 (300 steps)


@pytest.mark.slow
def test_guided_distillation_of_a_conditional_run_then_sample_the_student(conditional_run, tmp_path, capsys):
    out = tmp_path / "guided"
    cmd = ["distill", "--checkpoint", str(conditional_run), "--steps", "8", "--rounds", "1", "--out", str(out),
           "--guidance", "0", "3", "--guidance-steps", "40", "--train-steps", "20", "--batch-size", "64",
           "--checkpoint-every", "0", "--no-progress", "--threads", "1"]
    assert main(cmd) == 0
    text = capsys.readouterr().out
    assert "round 0: 8 -> 8 steps, 40 optimiser steps" in text and "round 1: 8 -> 4 steps, 20 optimiser steps" in text
    assert "--label K --guidance W (W in [0, 3])" in text
    cfg = json.loads((out / "round_1" / "config.json").read_text())
    assert cfg["model"]["net"]["kwargs"]["guidance_range"] == [0.0, 3.0] and cfg["loss"]["guidance"] == [0.0, 3.0]
    samples = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(out / "round_1"), "--sampler", "ddim", "--grid",
                 str(out / "round_1" / "grid.json"), "--label", "2", "--guidance", "2.5", "--n", "16",
                 "--out", str(samples), "--no-progress"]) == 0
    got = np.load(samples)
    assert got["x"].shape == (16, 2) and int(got["nfe"]) == 5 and float(got["guidance"]) == 2.5  # 4 steps + denoise
    line = _error(capsys, ["sample", "--checkpoint", str(out / "round_1"), "--sampler", "ddim", "--label", "2",
                           "--guidance", "4", "--n", "4", "--out", str(tmp_path / "t.npz")])
    assert "guidance: this model was distilled for guidance weights in [0, 3], got 4" in line
    assert "W_MIN < W_MAX" in _error(capsys, [*cmd[:8], str(tmp_path / "bad"), "--guidance", "2", "1"])


def test_runs_without_labels_record_what_they_always_did(tmp_path):
    out = tmp_path / "plain"
    assert main(["train", "--out", str(out), "train.steps=2", "train.progress=false"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert "num_classes" not in cfg["model"] and "label_dropout" not in cfg["loss"]
    assert "num_classes" not in cfg["metadata"]["cli"]["model"]
    assert "label_dropout" not in cfg["metadata"]["cli"]["loss"]


@pytest.mark.slow
def test_label_mistakes_are_one_line_errors(conditional_run, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    sample = ["sample", "--checkpoint", str(conditional_run), "--n", "4", "--steps", "2", "--out", out]
    assert "--label must be in [0, 7] (the model has 8 classes), got 9" in _error(capsys, [*sample, "--label", "9"])
    assert "--label must be a class label or a comma-separated list" in _error(capsys, [*sample, "--label", "one"])
    assert "--label must be class labels >= 0" in _error(capsys, [*sample, "--label=-1"])
    assert "--guidance weighs the conditional score of --label" in _error(capsys, [*sample, "--guidance", "3"])
    plain = tmp_path / "plain"
    assert main(["train", "--out", str(plain), "train.steps=2", "train.progress=false"]) == 0
    capsys.readouterr()
    msg = _error(capsys, ["sample", "--checkpoint", str(plain), "--label", "1", "--n", "4", "--steps", "2", "--out", out])
    assert "--label: this model is unconditional (trained without model.num_classes)" in msg
    train = ["train", "--out", str(tmp_path / "bad"), "train.steps=2"]
    assert "model.num_classes=8 but data.name 'moons' carries no class labels" in \
        _error(capsys, [*train, "model.num_classes=8", "data.name=moons"])
    assert "model.num_classes=4 but the labels of data.name 'ring' go up to 7" in \
        _error(capsys, [*train, "model.num_classes=4"])
    assert "loss.label_dropout trains the null class of a class-conditional model: set model.num_classes" in \
        _error(capsys, [*train, "loss.label_dropout=0.1"])
    assert "model.num_classes must be an integer >= 1, got 0" in _error(capsys, [*train, "model.num_classes=0"])
    assert "loss.label_dropout must be a number in [0, 1)" in \
        _error(capsys, [*train, "model.num_classes=8", "loss.label_dropout=1.5"])
