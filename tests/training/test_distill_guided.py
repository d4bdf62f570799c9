"""Guided distillation (Meng et al. 2023): a student that takes the guidance weight as an input.

Checked against exact answers on a two-class Gaussian mixture, whose conditional scores (one
Gaussian each) and unconditional score are closed-form: the weight input starts at zero, the
guided data prediction is affine in the weight, both stages' targets are the guided teacher's,
a guided student samples with one evaluation per step, a short run learns the weight's effect,
a run resumes bit for bit, and the argument checks name what is wrong."""

from __future__ import annotations

import shutil

import pytest
import torch

import scoresde as ss
from scoresde.sampling.conditioning import conditional_score
from scoresde.training.distillation import (
    DistillationLoss,
    GuidanceDistillationLoss,
    _data_x0,
    distillation_grid,
)

SDE = ss.VPSDE()
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
STDS = torch.tensor([0.5, 0.8], dtype=torch.float64)
RANGE = (0.0, 4.0)


def mixture():
    return ss.analytic.GaussianMixture(MEANS, STDS, torch.tensor([0.3, 0.7], dtype=torch.float64))


class ExactConditional:
    """The exact class-conditional score: label k -> the score of component k, ``y=None`` -> the
    mixture's (the unconditional score), under VP."""

    num_classes = 2

    def __init__(self):
        self.uncond = mixture().score_fn(SDE)

    def __call__(self, x, t, y=None):
        if y is None:
            return self.uncond(x, t)
        t = SDE.time(t, like=x)
        a, s = SDE.marginal(t.expand(x.shape[0]) if t.dim() == 0 else t)
        m, sd = MEANS.to(x.dtype)[y], STDS.to(x.dtype)[y]
        var = (a**2 * sd**2 + s**2)[:, None]
        return -(x - a[:, None] * m) / var


def draws(n, seed=0):
    return mixture().sample(n, generator=torch.Generator().manual_seed(seed), return_components=True)


def labelled(n, seed=0):
    x, k = draws(n, seed)
    return ss.data.TensorData(x.float(), labels=k)


def small_student(guidance_range=RANGE, seed=0):
    torch.manual_seed(seed)
    net = ss.MLP(2, 48, 2, num_classes=2, guidance_range=guidance_range)
    return ss.ScoreModel(net, SDE, "v", data_std=2.0)


def gaussian_batch(n, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


TRAIN = dict(batch_size=64, lr=2e-3, warmup_steps=0, ema_decay=0.9, checkpoint_every=10, progress=False, seed=3)


# ---- the weight as an input ---------------------------------------------------------------------
def test_added_guidance_input_starts_as_the_conditional_model_and_round_trips():
    torch.manual_seed(1)
    teacher = ss.ScoreModel(ss.UNet(1, 8, base=8, channel_mults=(1, 2), attn_resolutions=(), num_classes=3), SDE, "v")
    for p in teacher.parameters():  # a trained-looking teacher (its output layer is no longer zero)
        p.data.add_(0.05 * torch.randn_like(p))
    student = ss.models.with_guidance_input(teacher, (1.0, 5.0))
    assert teacher.guidance_range is None and student.guidance_range == (1.0, 5.0)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([0.9, 0.5, 0.2, 0.05]), torch.tensor([0, 1, 2, 3])
    for w in (1.0, 2.5, 5.0):
        assert torch.equal(student(x, t, y, guidance=w), teacher(x, t, y))
    for p in student.net.guidance_embed.parameters():  # once trained, the weight changes the output
        p.data.add_(0.1 * torch.randn_like(p))
    assert not torch.allclose(student(x, t, y, guidance=1.0), student(x, t, y, guidance=5.0))
    rebuilt = ss.ScoreModel.from_config(student.config)  # the spec records the input (load_run rebuilds it)
    rebuilt.load_state_dict(student.state_dict())
    assert torch.equal(rebuilt(x, t, y, guidance=3.0), student(x, t, y, guidance=3.0))
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])  # one weight per sample
    per = student(x, t, y, guidance=w)
    for i in range(4):
        torch.testing.assert_close(per[i:i + 1], student(x[i:i + 1], t[i:i + 1], y[i:i + 1], guidance=float(w[i])))


def test_weight_input_refusals_name_the_argument():
    student = small_student()
    x, t, y = torch.randn(3, 2), torch.full((3,), 0.5), torch.tensor([0, 1, 0])
    with pytest.raises(ss.ArgumentError, match=r"guidance: this model was distilled for guidance weights in \[0, 4\], got 4.5"):
        student(x, t, y, guidance=4.5)
    with pytest.raises(ss.ArgumentError, match="y: this ScoreModel takes the guidance weight as an input"):
        student(x, t)
    plain = ss.ScoreModel(ss.MLP(2, 16, 1, num_classes=2), SDE, "v")
    with pytest.raises(ss.ArgumentError, match="guidance: this ScoreModel does not take the guidance weight"):
        plain(x, t, y, guidance=2.0)
    with pytest.raises(ss.ArgumentError, match="w: this MLP was built without guidance_range"):
        plain.net(x, t, y, w=torch.ones(3))
    with pytest.raises(ss.ArgumentError, match="guidance_range must have w_min < w_max"):
        ss.MLP(2, 16, 1, num_classes=2, guidance_range=(3.0, 3.0))
    with pytest.raises(ss.ArgumentError, match="but no class labels"):
        ss.ScoreModel(ss.MLP(2, 16, 1, guidance_range=RANGE), SDE, "v")
    with pytest.raises(ss.ArgumentError, match="must be class-conditional"):
        ss.models.with_guidance_input(ss.ScoreModel(ss.MLP(2, 16, 1), SDE, "v"), RANGE)
    with pytest.raises(ss.ArgumentError, match="already takes the guidance weight"):
        student.net.add_guidance_input(RANGE)


# ---- the targets ---------------------------------------------------------------------------------
def test_guided_data_prediction_is_the_x0_of_the_guided_score():
    teacher, x = ExactConditional(), gaussian_batch(50)
    y = torch.arange(50) % 2
    for tv in (0.9, 0.3, 0.02):
        t = torch.full((50,), tv, dtype=torch.float64)
        for w in (0.0, 1.0, 2.5):
            guided = conditional_score(teacher, y, w)(x, t)
            want = SDE.to_x0(guided, x, t, "score")
            got = _data_x0(teacher, x, t, SDE, y, torch.full((50,), w, dtype=torch.float64))
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


class GuidedOracle(torch.nn.Module):
    """A 'student' that is exactly the guided teacher and takes the weight as an input."""

    num_classes, guidance_range = 2, RANGE

    def forward(self, x, t, y=None, guidance=None):
        w = guidance if isinstance(guidance, torch.Tensor) else torch.full((x.shape[0],), float(guidance), dtype=x.dtype)
        s_u = ExactConditional()(x, t)
        return s_u + w[:, None] * (ExactConditional()(x, t, y) - s_u)


def test_guidance_stage_loss_vanishes_at_the_guided_teacher_and_not_at_the_conditional_one():
    times = distillation_grid(SDE, 8)
    loss = GuidanceDistillationLoss(ExactConditional(), SDE, times, RANGE)
    assert loss.K == 8 and torch.equal(loss.student_times, times) and loss.config["loss"] == "guidance_distillation"
    x0, y = draws(256)
    assert float(loss(GuidedOracle(), x0, torch.Generator().manual_seed(0), y=y).abs().max()) < 1e-16

    def conditional_only(x, t, y=None, guidance=None):  # ignores the weight: the w = 1 answer everywhere
        return ExactConditional()(x, t, y)
    conditional_only.num_classes, conditional_only.guidance_range = 2, RANGE
    assert float(loss(conditional_only, x0, torch.Generator().manual_seed(0), y=y).mean()) > 1e-2


def test_round_target_is_two_guided_teacher_ddim_steps():
    times = [1.0, 0.6, 0.3]
    loss = DistillationLoss(GuidedOracle(), SDE, times, guidance=RANGE)
    x = gaussian_batch(40, seed=2)
    y = torch.arange(40) % 2
    for w in (0.0, 1.5, 4.0):
        target = loss.target(x, torch.zeros(40, dtype=torch.long), y, torch.full((40,), w, dtype=torch.float64))
        two = ss.sample(ExactConditional(), SDE, (40, 2), sampler="ddim", grid=times, x_start=x, cond=y, guidance=w,
                        denoise=False, check_every=0).x
        one = DistillationLoss.ddim_step(loss, x, target, *(torch.full((40,), float(v), dtype=torch.float64)
                                                           for v in (*SDE.marginal(torch.tensor(1.0, dtype=torch.float64)),
                                                                     *SDE.marginal(torch.tensor(0.3, dtype=torch.float64)))))
        torch.testing.assert_close(one, two, rtol=1e-10, atol=1e-10)


# ---- sampling a guided student -------------------------------------------------------------------
def test_guided_student_samples_with_one_evaluation_per_step():
    student = small_student()
    calls = []
    original = student.net.forward

    def spy(x, c, y=None, w=None):
        calls.append(w)
        return original(x, c, y, w)
    student.net.forward = spy
    res = ss.sample(student, SDE, (6, 2), sampler="ddim", steps=4, cond=1, guidance=2.5, denoise=False, seed=0)
    assert res.nfe == 4 and len(calls) == 4 and all(torch.equal(w, torch.full((6,), 2.5)) for w in calls)
    with pytest.raises(ss.ArgumentError, match=r"distilled for guidance weights in \[0, 4\], got 6"):
        ss.sample(student, SDE, (6, 2), sampler="ddim", steps=4, cond=1, guidance=6.0)
    with pytest.raises(ss.ArgumentError, match="serves one label per sample"):
        ss.sample(student, SDE, (6, 2), sampler="ddim", steps=4, cond=torch.zeros(6, 2, dtype=torch.long), guidance=1.0)


# ---- the stages on the Trainer -------------------------------------------------------------------------
def test_short_guided_distillation_learns_the_weights_effect_and_resumes(tmp_path):
    torch.set_num_threads(1)
    data = labelled(2000)
    args = dict(steps=8, rounds=1, student=small_student(), train_steps=150, guidance=RANGE, **TRAIN)
    res = ss.distill(ExactConditional(), SDE, data, out_dir=tmp_path / "a", **args)
    assert [(r.round, r.teacher_steps, r.student_steps) for r in res.rounds] == [(0, 8, 8), (1, 8, 4)]
    assert [s.steps for s in res.students] == [8, 4] and torch.equal(res.grid, distillation_grid(SDE, 8)[::2])
    # the student's change from w = 0 to w = 4 follows the guided DDIM map's (it starts w-blind)
    x_T = SDE.prior_sample((400, 2), generator=torch.Generator().manual_seed(9))
    y = torch.arange(400) % 2

    def run(model, grid, w):
        return ss.sample(model, SDE, (400, 2), sampler="ddim", grid=grid, x_start=x_T, cond=y, guidance=w,
                         denoise=False, check_every=0).x.double()
    teacher_shift = run(ExactConditional(), res.teacher_grid, 4.0) - run(ExactConditional(), res.teacher_grid, 0.0)
    student_shift = run(res.student, res.grid, 4.0) - run(res.student, res.grid, 0.0)
    cos = float((teacher_shift * student_shift).sum() / (teacher_shift.norm() * student_shift.norm()))
    rel = float((student_shift - teacher_shift).norm() / teacher_shift.norm())
    assert cos > 0.8 and rel < 0.6, (cos, rel)  # measured: cos 0.97-0.98, rel 0.2-0.3 over seeds
    # the same run in two calls, round 0 stopped at step 80 and extended (constant learning rate):
    # the same students, bit for bit (the weights' draws continue from the checkpointed generator)
    first = ss.distill(ExactConditional(), SDE, data, out_dir=tmp_path / "b", **{**args, "guidance_steps": 80})
    assert first.rounds[0].train_steps == 80
    # round 1 was distilled from the 80-step student: once round 0 is extended (kept) it is stale, and refused
    with pytest.raises(ss.RunFolderError, match="teacher_sha256"):
        ss.distill(ExactConditional(), SDE, data, out_dir=tmp_path / "b", **{**args, "guidance_steps": 150})
    shutil.rmtree(tmp_path / "b" / "round_1")
    split = ss.distill(ExactConditional(), SDE, data, out_dir=tmp_path / "b", **{**args, "guidance_steps": 150})
    assert [r.resumed_from for r in split.rounds] == [150, 0]
    for a, b in zip(split.student.state_dict().values(), res.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    again = ss.distill(ExactConditional(), SDE, data, out_dir=tmp_path / "a", **args)  # finished: nothing trained
    assert [r.seconds for r in again.rounds] == [0.0, 0.0]
    for a, b in zip(again.student.state_dict().values(), res.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(student=ss.ScoreModel(ss.MLP(2, 16, 1, num_classes=2), SDE, "v")),
     r"student must take the guidance weight as an input for weights in \(0.0, 4.0\)"),
    (dict(student=ss.ScoreModel(ss.MLP(2, 16, 1, num_classes=2, guidance_range=(0, 2)), SDE, "v")),
     r"it has guidance_range=\(0.0, 2.0\)"),
    (dict(student=None), "student: the teacher is a plain score function"),
    (dict(guidance=(2.0, 1.0)), "guidance must have w_min < w_max"),
    (dict(guidance=None, guidance_steps=5), "guidance_steps is the guidance stage's length"),
])
def test_bad_guided_arguments_are_named(kwargs, needle):
    args = dict(steps=8, rounds=1, student=small_student(), train_steps=5, guidance=RANGE, progress=False)
    args.update(kwargs)
    with pytest.raises(ss.ArgumentError, match=needle):
        ss.distill(ExactConditional(), SDE, labelled(100), **args)


def test_guided_distillation_needs_labelled_data():
    x = draws(100)[0].float()
    with pytest.raises(ss.ArgumentError, match="carry no class labels"):
        ss.distill(ExactConditional(), SDE, x, steps=8, rounds=1, student=small_student(), train_steps=5,
                   guidance=RANGE, progress=False)


@pytest.mark.parametrize("stage", ["guidance", "round"])
def test_guided_loss_shards_see_the_global_batch_draws(stage):
    """Under torchrun each rank passes shard=(start, total): its rows of the global batch get the
    indices, noise and guidance weights that one process would draw for them."""
    student, (x0, y) = small_student(), draws(12)
    times = distillation_grid(SDE, 4)
    loss = (GuidanceDistillationLoss(ExactConditional(), SDE, times, RANGE) if stage == "guidance"
            else DistillationLoss(ExactConditional(), SDE, times, guidance=RANGE))
    x0 = x0.float()
    full = loss(student, x0, torch.Generator().manual_seed(5), y=y)
    parts = [loss(student, x0[a:b], torch.Generator().manual_seed(5), shard=(a, 12), y=y[a:b])
             for a, b in ((0, 4), (4, 8), (8, 12))]
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-5, atol=1e-7)
