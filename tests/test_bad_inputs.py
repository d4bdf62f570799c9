"""Bad input anywhere a user can reach it is a ScoreSDEError that names the argument.

A table of mistakes of the kinds users make -- a string for a number, a float for a count,
a negative size, an unknown name, a NaN, a wrong dtype, an impossible device -- across the
SDEs, the analytic mixtures, the data sets, the networks, the losses and the trainer (the
samplers, the likelihood, the checkpoints and the command line have their own tables in their
test folders). Each must raise a subclass of ``ss.ScoreSDEError`` (so ``except
ss.ScoreSDEError`` catches it) whose message matches the pattern, which names the argument.
"""

import inspect
import math

import pytest
import torch

import scoresde as ss

F64 = torch.float64
GMM = ss.analytic.ring_mixture()
_X = GMM.sample(20, generator=torch.Generator().manual_seed(0))


def _viz():
    import scoresde.viz

    return scoresde.viz


def _trainer(**kw):
    sde = ss.VPSDE()
    return ss.Trainer(ss.ScoreModel(ss.MLP(2, 8, 1), sde), ss.DSMLoss(sde), torch.zeros(10, 2), progress=False, **kw)


CASES = [
    # ---- SDEs --------------------------------------------------------------------------------
    ("vp beta_min str", lambda: ss.VPSDE(beta_min="a"), "beta_min must be a positive number, got 'a'"),
    ("vp beta_max < beta_min", lambda: ss.VPSDE(2.0, 1.0), "beta_max must be >= beta_min"),
    ("vp schedule", lambda: ss.VPSDE(schedule="cos"), "schedule must be"),
    ("vp eps nan", lambda: ss.VPSDE(eps=math.nan), "eps must be a number in \\(0, 1\\)"),
    ("vp eps str", lambda: ss.VPSDE(eps="1e-3"), "eps must be a number in \\(0, 1\\), got '1e-3'"),
    ("subvp beta bool", lambda: ss.SubVPSDE(beta_min=True), "beta_min must be a positive number, got True"),
    ("ve sigma negative", lambda: ss.VESDE(sigma_min=-1.0), "sigma_min must be a positive finite number"),
    ("ve sigma order", lambda: ss.VESDE(1.0, 0.5), "sigma_min must be smaller than sigma_max"),
    ("linear f not callable", lambda: ss.LinearSDE(1.0, lambda t: t), "f must be callable"),
    ("linear sigma0 str", lambda: ss.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t, sigma0="a"),
     "sigma0 must be a number >= 0, got 'a'"),
    ("linear grid_size float", lambda: ss.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t, grid_size=100.0),
     "grid_size must be an integer >= 16, got 100.0"),
    ("linear T zero", lambda: ss.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t, T=0), "T must be a positive finite number"),
    ("linear g negative", lambda: ss.LinearSDE(lambda t: 0 * t, lambda t: -1 + 0 * t), "g must be non-negative"),
    ("linear f nan", lambda: ss.LinearSDE(lambda t: t * math.nan, lambda t: 1 + 0 * t), "f and g must be finite"),
    ("marginal t str", lambda: ss.VPSDE().marginal("a"), "t must be a number or a floating-point tensor, got 'a'"),
    ("marginal t outside", lambda: ss.VPSDE().marginal(2.0), "t must lie in \\[0, T\\] = \\[0, 1\\], got 2.0"),
    ("marginal t nan", lambda: ss.VESDE().marginal(torch.tensor([0.5, math.nan], dtype=F64)), "t must lie in .*got nan"),
    ("marginal t int tensor", lambda: ss.VPSDE().marginal(torch.tensor([1])), "t must be a floating-point tensor"),
    ("t_from_log_snr int", lambda: ss.VPSDE().t_from_log_snr(torch.tensor([1])), "lam must be a floating-point tensor"),
    ("marginal_prob x int", lambda: ss.VPSDE().marginal_prob(torch.zeros(2, 2, dtype=torch.long), 0.5),
     "x0 must be a floating-point tensor"),
    ("marginal_prob t shape", lambda: ss.VPSDE().marginal_prob(torch.zeros(2, 2), torch.full((3,), 0.5)),
     "t must be a scalar or have the leading \\(batch\\) shape of x"),
    ("prior_log_prob z int", lambda: ss.VPSDE().prior_log_prob(torch.zeros(2, 2, dtype=torch.long)),
     "z must be a floating-point tensor"),
    ("reverse score not callable", lambda: ss.VPSDE().reverse(3), "score_fn must be callable"),
    # ---- analytic mixtures -----------------------------------------------------------------------
    ("gmm means str", lambda: ss.analytic.GaussianMixture("abc"), "means must be a tensor or a sequence of numbers, got 'abc'"),
    ("gmm means 1-d", lambda: ss.analytic.GaussianMixture([0.0, 1.0]), "means must have shape \\(K, D\\)"),
    ("gmm stds str", lambda: ss.analytic.GaussianMixture([[0.0, 1.0]], stds="x"), "stds must be a tensor or a sequence"),
    ("gmm stds zero", lambda: ss.analytic.GaussianMixture([[0.0, 1.0]], stds=0.0), "stds must be positive and finite"),
    ("gmm weights negative", lambda: ss.analytic.GaussianMixture([[0.0, 1.0]], weights=[-1.0]), "weights must be positive"),
    ("gmm weights shape", lambda: ss.analytic.GaussianMixture([[0.0, 1.0]], weights=[1.0, 2.0]), "weights must have shape \\(1,\\)"),
    ("gmm means nan", lambda: ss.analytic.GaussianMixture([[0.0, math.nan]]), "means must be finite"),
    ("gmm dtype int", lambda: ss.analytic.GaussianMixture([[0.0, 1.0]], dtype=torch.int64), "dtype must be a floating-point"),
    ("gmm.sample negative", lambda: GMM.sample(-1), "n must be an integer >= 0, got -1"),
    ("gmm.sample float", lambda: GMM.sample(2.5), "n must be an integer >= 0, got 2.5"),
    ("gmm.sample t without sde", lambda: GMM.sample(3, t=0.5), "sde must be given with t"),
    ("gmm.log_prob x shape", lambda: GMM.log_prob(torch.zeros(3, 3, dtype=F64), 0.5, ss.VPSDE()), "x must have shape \\(\\.\\.\\., 2\\)"),
    ("gmm.log_prob sde str", lambda: GMM.log_prob(torch.zeros(3, 2, dtype=F64), 0.5, "vp"), "sde must be a LinearSDE"),
    ("gmm.score_fn custom sde", lambda: GMM.score_fn(_Cubic()), "sde must be a LinearSDE"),
    ("ring_mixture 0", lambda: ss.analytic.ring_mixture(0), "n_components must be an integer >= 1, got 0"),
    ("ring_mixture radius str", lambda: ss.analytic.ring_mixture(8, radius="a"), "radius must be a positive number, got 'a'"),
    ("ring_mixture std 0", lambda: ss.analytic.ring_mixture(8, std=0), "std must be a positive finite number"),
    ("random_mixture dim float", lambda: ss.analytic.random_mixture(2.0), "dim must be an integer >= 1, got 2.0"),
    ("random_mixture seed", lambda: ss.analytic.random_mixture(4, seed=-1), "seed must be an integer in \\[0, "),
    ("random_mixture std_range", lambda: ss.analytic.random_mixture(4, std_range=(0.5, 0.1)), "std_range must be \\(lo, hi\\)"),
    # ---- data sets -----------------------------------------------------------------------------------
    ("mixture data n 0", lambda: ss.MixtureDataset(GMM, 0), "n must be an integer >= 1, got 0"),
    ("mixture data seed str", lambda: ss.MixtureDataset(GMM, 10, seed="a"), "seed must be an integer in \\[0, "),
    ("mixture data seed huge", lambda: ss.MixtureDataset(GMM, 10, seed=2**70), "seed must be an integer in \\[0, "),
    ("mixture data gmm", lambda: ss.MixtureDataset("ring", 10), "gmm must be a scoresde.analytic.GaussianMixture"),
    ("toy name", lambda: ss.ToyDataset("x", 10), "name must be one of"),
    ("toy n float", lambda: ss.ToyDataset("moons", 10.0), "n must be an integer >= 1, got 10.0"),
    ("toy noise negative", lambda: ss.ToyDataset("moons", 10, noise=-1.0), "noise must be a finite number >= 0"),
    ("toy seed float", lambda: ss.ToyDataset("moons", 10, seed=1.5), "seed must be an integer"),
    ("digits split", lambda: ss.digits_dataset("x"), "split must be"),
    ("dequantize bins", lambda: ss.likelihood.dequantize(torch.zeros(2, 2), num_bins=0), "num_bins must be an integer >= 1"),
    ("dequantize range", lambda: ss.likelihood.dequantize(torch.zeros(2, 2), data_range=(1, -1)), "data_range must be \\(lo, hi\\)"),
    ("dequantize levels", lambda: ss.likelihood.dequantize(torch.full((2, 2), 300.0)), "u must hold integers in \\[0, 255\\]"),
    # ---- metrics and plots -------------------------------------------------------------------------
    ("sw seed float", lambda: ss.metrics.sliced_wasserstein(_X, _X, seed=1.5), "seed must be an integer in \\[0, "),
    ("sw projections", lambda: ss.metrics.sliced_wasserstein(_X, _X, n_projections=0), "n_projections must be an integer >= 1"),
    ("sw p", lambda: ss.metrics.sliced_wasserstein(_X, _X, p=3), "p must be one of 1, 2"),
    ("sw nan samples", lambda: ss.metrics.sliced_wasserstein(_X * math.nan, _X), "x must be finite: 20 of its 20 samples"),
    ("sw event sizes", lambda: ss.metrics.sliced_wasserstein(_X, torch.zeros(5, 3)), "x and y must have the same event size"),
    ("mmd bandwidth str", lambda: ss.metrics.mmd(_X, _X, bandwidth="a"), "bandwidth must be a positive number, got 'a'"),
    ("energy int samples", lambda: ss.metrics.energy_distance(_X.long(), _X), "x must be a floating-point tensor with at least 2"),
    ("dispersion nan", lambda: ss.metrics.dispersion(_X * math.inf, GMM), "x must be finite"),
    ("dispersion gmm", lambda: ss.metrics.dispersion(_X, "ring"), "gmm must be a scoresde.analytic.GaussianMixture"),
    ("chi2 weights shape", lambda: ss.metrics.occupancy_chi2(_X, GMM, expected_weights=torch.ones(3)),
     "expected_weights must be a tensor of 8 non-negative weights"),
    ("chi2 too few", lambda: ss.metrics.occupancy_chi2(_X[:0], GMM), "too few samples for a chi-square test"),
    ("scatter not a mapping", lambda: _viz().scatter_panels("x"), "panels must be a non-empty mapping"),
    ("scatter 3-d points", lambda: _viz().scatter_panels({"a": torch.zeros(5, 3)}), "panel 'a' must hold \\(n, 2\\) points"),
    ("image grid nrow", lambda: _viz().image_grid(torch.zeros(4, 1, 8, 8), nrow=0), "nrow must be an integer >= 1"),
    ("image grid shape", lambda: _viz().image_grid(torch.zeros(5, 3)), "images must have shape \\(n, 1 or 3, H, W\\)"),
    ("trajectories", lambda: _viz().trajectory_panels([]), "trajectories must be a non-empty mapping"),
    ("curves no rows", lambda: _viz().comparison_curves([], metrics=["sliced_w2"]), "rows must hold at least one row"),
    ("curves missing key", lambda: _viz().comparison_curves([{"nfe": 1, "sampler": "em"}], metrics=["w2"]),
     "every row must have the key 'w2'"),
    # ---- networks and score models ---------------------------------------------------------------
    ("mlp dim str", lambda: ss.MLP("a"), "dim must be an integer >= 1, got 'a'"),
    ("mlp hidden 0", lambda: ss.MLP(2, 0), "hidden must be an integer >= 1, got 0"),
    ("mlp embedding", lambda: ss.MLP(2, embedding="x"), "embedding must be"),
    ("mlp input shape", lambda: ss.MLP(2)(torch.zeros(3, 4), torch.zeros(3)), "MLP\\(dim=2\\) expects x of shape \\(batch, 2\\)"),
    ("unet size", lambda: ss.UNet(3, 7), "image_size must be divisible"),
    ("unet dropout", lambda: ss.UNet(3, 8, dropout=1.0), "dropout must lie in \\[0, 1\\)"),
    ("score model parameterization", lambda: ss.ScoreModel(ss.MLP(2), ss.VPSDE(), "z"), "parameterization must be one of"),
    ("score model data_std", lambda: ss.ScoreModel(ss.MLP(2), ss.VPSDE(), data_std="a"), "data_std must be a positive number"),
    ("score model net", lambda: ss.ScoreModel(lambda x, c: x, ss.VPSDE()), "net must be a torch.nn.Module"),
    ("score model eps on custom sde", lambda: ss.ScoreModel(ss.MLP(2), _Cubic(), "eps"), "needs the closed-form marginals"),
    ("score model t shape", lambda: ss.ScoreModel(ss.MLP(2), ss.VPSDE())(torch.zeros(3, 2), torch.zeros(2)),
     "t must be a scalar or have shape \\(3,\\)"),
    # ---- losses and the trainer ------------------------------------------------------------------
    ("dsm eps str", lambda: ss.DSMLoss(ss.VPSDE(), eps="a"), "eps must be a number in \\(0, 1\\), got 'a'"),
    ("dsm eps zero", lambda: ss.DSMLoss(ss.VPSDE(), eps=0.0), "eps must be a number in \\(0, 1\\)"),
    ("dsm weighting", lambda: ss.DSMLoss(ss.VPSDE(), weighting="x"), "weighting must be one of"),
    ("dsm custom sde", lambda: ss.DSMLoss(_Cubic()), "sde must be a LinearSDE"),
    ("dsm x0 int", lambda: ss.DSMLoss(ss.VPSDE())(ss.ScoreModel(ss.MLP(2), ss.VPSDE()), torch.zeros(3, 2, dtype=torch.long)),
     "x0 must be a floating-point tensor"),
    ("ssm dt str", lambda: ss.SlicedScoreMatchingLoss(ss.VPSDE(), dt="a"), "dt must be a positive number, got 'a'"),
    ("ssm t_min str", lambda: ss.SlicedScoreMatchingLoss(ss.VPSDE(), t_min="a"), "t_min must be a number in \\(0, 1\\)"),
    ("ssm n_times 1", lambda: ss.SlicedScoreMatchingLoss(ss.VPSDE(), n_times=1), "n_times must be an integer >= 2"),
    ("ssm weighting", lambda: ss.SlicedScoreMatchingLoss(ss.VPSDE(), weighting=2.0), "weighting must be callable"),
    ("ema decay", lambda: ss.training.EMA(torch.nn.Linear(2, 2), decay=1.5), "decay must lie in \\[0, 1\\)"),
    ("trainer betas str", lambda: _trainer(betas="ab"), "betas must be a pair \\(beta1, beta2\\)"),
    ("trainer betas length", lambda: _trainer(betas=(0.9,)), "betas must be a pair"),
    ("trainer betas value", lambda: _trainer(betas=(0.9, 1.5)), "betas\\[1\\] must be a number in \\[0, 1\\)"),
    ("trainer seed float", lambda: _trainer(seed=1.5), "seed must be an integer in \\[0, "),
    ("trainer seed huge", lambda: _trainer(seed=2**70), "seed must be an integer in \\[0, "),
    ("trainer lr str", lambda: _trainer(lr="1e-3"), "lr must be a positive number, got '1e-3'"),
    ("trainer steps bool", lambda: _trainer(steps=True), "steps must be an integer >= 1, got True"),
    ("trainer ema_decay", lambda: _trainer(ema_decay=1.0), "ema_decay must be a number in \\[0, 1\\)"),
    ("trainer amp str", lambda: _trainer(amp="yes"), "amp must be True or False"),
    ("trainer unknown option", lambda: _trainer(learning_rate=1e-3), "unknown Trainer option 'learning_rate'"),
    ("trainer device bogus", lambda: _trainer(device="gpu"), "device must be a device such as 'cpu'"),
    ("trainer data empty", lambda: ss.Trainer(ss.ScoreModel(ss.MLP(2), ss.VPSDE()), ss.DSMLoss(ss.VPSDE()),
                                              torch.zeros(0, 2)), "data is empty"),
    ("trainer model", lambda: ss.Trainer("net", ss.DSMLoss(ss.VPSDE()), torch.zeros(4, 2)), "model must be a torch.nn.Module"),
    ("trainer loss", lambda: ss.Trainer(ss.ScoreModel(ss.MLP(2), ss.VPSDE()), "dsm", torch.zeros(4, 2)), "loss_fn must be callable"),
]

if not torch.cuda.is_available():
    CASES += [
        ("trainer device cuda", lambda: _trainer(device="cuda"), "device='cuda' but CUDA is not available"),
    ]


class _Cubic(ss.SDE):
    prior_std = 1.0

    def drift(self, x, t):
        return -(x**3)

    def diffusion(self, x, t):
        return torch.ones_like(x)


@pytest.mark.parametrize("call, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_named_scoresde_error(call, match):
    with pytest.raises(ss.ScoreSDEError, match=match):
        call()


def test_the_table_is_large():
    assert len(CASES) >= 80


def test_every_exception_the_package_defines_is_a_scoresde_error():
    classes = [obj for _, obj in inspect.getmembers(ss.errors, inspect.isclass)
               if issubclass(obj, BaseException) and obj.__module__ == "scoresde.errors"]
    assert len(classes) >= 8
    assert all(issubclass(c, ss.ScoreSDEError) for c in classes)
    # and each keeps the built-in type a caller would catch
    assert issubclass(ss.ArgumentError, ValueError) and issubclass(ss.CheckpointError, ValueError)
    assert issubclass(ss.NonFiniteError, FloatingPointError) and issubclass(ss.ODESolveError, RuntimeError)
    assert issubclass(ss.NoTransitionKernelError, NotImplementedError)


def test_the_empty_sample_is_an_answer_not_an_error():
    assert GMM.sample(0).shape == (0, 2)


def test_a_flag_is_not_a_number_among_choices():
    with pytest.raises(ss.ArgumentError, match="p must be one of 1, 2; got True"):
        ss.metrics.sliced_wasserstein(_X, _X, p=True)
