"""Bad input gets a clear error naming the argument and the value; NaN names the time reached."""

import pytest
import torch

import scoresde as ss
from scoresde.sampling import NonFiniteError

SDE = ss.VPSDE()
GMM = ss.analytic.ring_mixture()
SCORE = GMM.score_fn(SDE)


class OscillatorSDE(ss.SDE):
    """A nonlinear SDE (no closed-form kernel): dx = -tanh(x) dt + dW."""

    prior_std = 1.0

    def drift(self, x, t):
        return -torch.tanh(x)

    def diffusion(self, x, t):
        return torch.ones_like(x[..., :1])


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError, match="unknown sampler 'eulr'") as err:
        ss.sample(SCORE, SDE, (4, 2), sampler="eulr")
    for name in ss.available_samplers():
        assert name in str(err.value)


@pytest.mark.parametrize("steps", [0, -3])
def test_non_positive_steps(steps):
    with pytest.raises(ValueError, match=f"steps must be an integer >= 1, got {steps}"):
        ss.sample(SCORE, SDE, (4, 2), steps=steps)


def test_non_integer_steps():
    with pytest.raises(ValueError, match="steps must be an integer"):
        ss.sample(SCORE, SDE, (4, 2), steps=10.5)


@pytest.mark.parametrize("name", ["dpm_solver", "heun", "ancestral", "annealed_langevin"])
def test_sampler_that_needs_a_linear_sde(name):
    sde = OscillatorSDE()
    with pytest.raises(ValueError, match=f"sampler '{name}' needs (a linear SDE|closed-form marginals).*got OscillatorSDE; "
                       "samplers that serve OscillatorSDE: euler_maruyama, ode, pc"):
        ss.sample(lambda x, t: -x, sde, (4, 2), sampler=name, steps=5)


def test_nonlinear_sde_is_served_by_generic_samplers():
    sde = OscillatorSDE()
    for name in ["euler_maruyama", "reverse_diffusion", "pc", "ode", "torchsde"]:
        res = ss.sample(lambda x, t: -x, sde, (4, 2), sampler=name, steps=5, seed=0, dtype=torch.float64)
        assert res.x.shape == (4, 2) and bool(torch.isfinite(res.x).all())


def test_score_fn_with_wrong_shape():
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of x's shape \(4, 2\), got \(4,\)"):
        ss.sample(lambda x, t: x.sum(1), SDE, (4, 2), steps=3)


@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "heun", "dpm_solver", "ancestral"])
def test_nan_names_the_time_reached(name):
    def score(x, t):  # NaN once t drops below 0.5
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(NonFiniteError, match=r"non-finite values.*first seen at t=0\.4"):
        ss.sample(score, SDE, (4, 2), sampler=name, steps=20, grid="uniform", seed=0, check_every=0)


def test_nan_with_adaptive_ode_names_the_time():
    def score(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(NonFiniteError, match=r"non-finite \(NaN or inf\) at t=0\.[45]"):
        ss.sample(score, SDE, (4, 2), sampler="ode", seed=0)


def test_nan_stops_early_when_checked_periodically():
    calls = []

    def score(x, t):
        calls.append(1)
        return torch.full_like(x, float("nan"))

    with pytest.raises(NonFiniteError, match="first seen at t=0.999"):
        ss.sample(score, SDE, (4, 2), steps=1000, seed=0, check_every=10)
    assert len(calls) == 10  # stopped at the first host check, not after 1000 steps


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampler="pc", snr=-1.0), "snr must be a finite number >= 0, got -1.0"),
        (dict(sampler="pc", predictor="rk4"), "predictor must be one of"),
        (dict(sampler="dpm_solver", order=4), r"order must be an integer in \[1, 3\], got 4"),
        (dict(sampler="dpm_solver", prediction="v"), "prediction must be one of"),
        (dict(sampler="ode", method="rk45"), "method must be one of 'dopri5', .*got 'rk45'"),
        (dict(sampler="ode", rtol=0.0), "rtol must be a number in"),
        (dict(sampler="torchsde", method="reversible_heun"), "method must be one of"),
        (dict(sampler="heun", churn=-1), "churn must be a finite number >= 0"),
        (dict(grid="cosine"), "grid must be one of"),
        (dict(grid=[1.0, 0.5, 0.7]), "grid must be strictly decreasing"),
        (dict(eps=0.0), r"eps must be a number in \(0, 1\), got 0.0"),
        (dict(t_start=2.0), r"t_start must be a number in \(1e-05, 1\], got 2.0"),
        (dict(seed=[1, 2]), "seed must be one per sample: a sequence of 4 seeds, got 2"),
        (dict(seed=1, generator=torch.Generator()), "give seed or generator, not both"),
        (dict(dtype=torch.int64), "dtype must be torch.float32 or torch.float64, got torch.int64"),
        (dict(mask=torch.ones(4, 2, dtype=torch.bool)), "inpainting needs both mask and known"),
        (dict(sampler="ode", mask=torch.ones(2, dtype=torch.bool), known=torch.zeros(2)), "cannot apply inpaint='replacement'"),
        (dict(x_start=torch.zeros(3, 2)), r"must have shape \(4, 2\)"),
    ],
)
def test_bad_options(kwargs, match):
    kwargs = dict(kwargs)
    kwargs.setdefault("steps", 5) if kwargs.get("sampler") != "ode" else None
    with pytest.raises(ValueError, match=match):
        ss.sample(SCORE, SDE, (4, 2), **kwargs)


def test_bad_shape_and_sde():
    with pytest.raises(ValueError, match="shape must be"):
        ss.sample(SCORE, SDE, (0, 2))
    with pytest.raises(ValueError, match="sde must be a scoresde.SDE"):
        ss.sample(SCORE, "vp", (4, 2))
    with pytest.raises(ValueError, match="score_fn must be callable"):
        ss.sample(None, SDE, (4, 2))


# ---- every argument a user can reach, given the usual kinds of mistakes --------------------------
def _boom(x, t):
    raise TypeError("forward() takes 2 positional arguments but 3 were given")


MASK = torch.ones(2, dtype=torch.bool)


def _sample(**kwargs):
    kwargs.setdefault("steps", 3)
    return lambda: ss.sample(kwargs.pop("score_fn", SCORE), kwargs.pop("sde", SDE), kwargs.pop("shape", (4, 2)), **kwargs)


MISTAKES = {
    # ss.sample's own arguments
    "shape float": (_sample(shape=(4, 2.5)), r"shape must be a non-empty sequence of positive integers, got \(4, 2.5\)"),
    "shape int": (_sample(shape=4), "shape must be a sequence of positive integers"),
    "shape str": (_sample(shape="ab"), "shape must be a sequence of positive integers"),
    "steps True": (_sample(steps=True), "steps must be an integer >= 1, got True"),
    "steps str": (_sample(steps="10"), "steps must be an integer >= 1, got '10'"),
    "eps str": (_sample(eps="a"), r"eps must be a number in \(0, 1\), got 'a'"),
    "eps above T": (_sample(eps=1.0), r"eps must be a number in \(0, 1\), got 1.0"),
    "t_start str": (_sample(t_start="a"), r"t_start must be a number in \(1e-05, 1\], got 'a'"),
    "t_start below eps": (_sample(t_start=1e-3, eps=0.01), r"t_start must be a number in \(0.01, 1\], got 0.001"),
    "check_every str": (_sample(check_every="a"), "check_every must be an integer >= 0, got 'a'"),
    "check_every negative": (_sample(check_every=-1), "check_every must be an integer >= 0, got -1"),
    "seed float": (_sample(seed=1.5), "seed must be an integer or a sequence of 4 seeds"),
    "seed too large": (_sample(seed=2**70), r"seed must be an integer in \[0, 9223372036854775807\], got 1180591620717411303424"),
    "seed negative": (_sample(seed=-1), r"seed must be an integer in \[0, "),
    "seed str": (_sample(seed="a"), "seed must be an integer or a sequence of 4 seeds"),
    "seeds too few": (_sample(seed=[1, 2, 3]), "seed must be one per sample: a sequence of 4 seeds, got 3"),
    "seeds with a float": (_sample(seed=[1, 2, 3, 4.5]), r"seed\[3\] must be an integer in \[0, "),
    "generator str": (_sample(generator="g"), "generator must be a torch.Generator or a sequence of 4 generators"),
    "generators too few": (_sample(generator=[torch.Generator()]), "generator must be one per sample: a sequence of 4 generators, got 1"),
    "generator on another device": (_sample(generator=torch.Generator(), device="meta"), "generator is on cpu but the samples on meta"),
    "device unknown": (_sample(device="gpu"), "device must be a device such as 'cpu', 'cuda'"),
    "device int": (_sample(device=3), "device must be a torch.device or a string"),
    "dtype half": (_sample(dtype=torch.float16), "dtype must be torch.float32 or torch.float64, got torch.float16"),
    "dtype str": (_sample(dtype="float32"), "dtype must be torch.float32 or torch.float64, got 'float32'"),
    "denoise str": (_sample(denoise="yes"), "denoise must be True or False, got 'yes'"),
    "return_trajectory int": (_sample(return_trajectory=1), "return_trajectory must be True or False, got 1"),
    "progress None": (_sample(progress=None), "progress must be True or False, got None"),
    "differentiable str": (_sample(differentiable="no"), "differentiable must be True or False, got 'no'"),
    "grid number": (_sample(grid=5, steps=None), r"grid must be a 1-D sequence of at least 2 times, got shape \(\)"),
    "grid strings": (_sample(grid=["a", "b"], steps=None), "grid must be 'uniform', 'log_snr', 'edm' or a sequence of times"),
    "grid bool": (_sample(grid=True, steps=None), "grid must be 'uniform', 'log_snr', 'edm' or a sequence of times, got True"),
    "grid nan": (_sample(grid=[1.0, float("nan")], steps=None), "grid must be strictly decreasing"),
    "grid beyond T": (_sample(grid=[2.0, 0.5], steps=None), r"grid must lie in \(0, T\] = \(0, 1\]"),
    "grid 2-D": (_sample(grid=[[1.0, 0.5]], steps=None), r"grid must be a 1-D sequence of at least 2 times, got shape \(1, 2\)"),
    "grid vs t_start": (_sample(grid=[1.0, 0.5, 0.1], steps=None, t_start=0.7), "t_start=0.7 disagrees with the given grid"),
    "grid vs eps": (_sample(grid=[1.0, 0.5, 0.1], steps=None, eps=0.01), "eps=0.01 disagrees with the given grid"),
    "rho str": (_sample(grid="edm", rho="a"), "rho must be a positive number, got 'a'"),
    "rho negative": (_sample(grid="edm", rho=-1.0), "rho must be a positive finite number, got -1.0"),
    "x_start wrong shape": (_sample(x_start=torch.zeros(4, 3)), r"x_start must have shape \(4, 2\) \(the samples' shape\), got \(4, 3\)"),
    "x_start int": (_sample(x_start=torch.zeros(4, 2, dtype=torch.int64)), "x_start must be a floating-point tensor, got dtype torch.int64"),
    "x_start half": (_sample(x_start=torch.zeros(4, 2, dtype=torch.float16)), "x_start must be float32 or float64"),
    "x_start list": (_sample(x_start=[[0.0, 0.0]] * 4), "x_start must be a torch.Tensor, got list"),
    "x_start nan": (_sample(x_start=torch.full((4, 2), float("nan"))), "x_start must be finite"),
    "x_init wrong shape": (_sample(x_init=torch.zeros(2, 2)), r"x_init must have shape \(4, 2\)"),
    "x_init on a plain SDE": (_sample(sde=OscillatorSDE(), x_init=torch.zeros(4, 2)), "x_init .* needs a LinearSDE"),
    "mask str": (_sample(mask="ab", known=torch.zeros(2)), "mask must be a boolean tensor"),
    "mask float": (_sample(mask=torch.ones(2), known=torch.zeros(2)), "mask must be a boolean tensor .*got dtype torch.float32"),
    "mask shape": (_sample(mask=torch.ones(3, dtype=torch.bool), known=torch.zeros(2)), r"mask and known must broadcast to the sample shape \(4, 2\)"),
    "mask all False": (_sample(mask=torch.zeros(2, dtype=torch.bool), known=torch.zeros(2)), "mask marks no value as known"),
    "known str": (_sample(mask=MASK, known="ab"), "known must be a tensor of numbers"),
    "known bool": (_sample(mask=MASK, known=MASK), "known must be a real-valued tensor"),
    "known nan": (_sample(mask=MASK, known=torch.full((2,), float("nan"))), "known must be finite where mask is True"),
    "known without mask": (_sample(known=torch.zeros(2)), "inpainting needs both mask and known"),
    "inpaint unknown": (_sample(mask=MASK, known=torch.zeros(2), inpaint="blend"), "inpaint must be one of 'replacement', 'tweedie'; got 'blend'"),
    "inpaint unhashable": (_sample(inpaint=[]), "inpaint must be one of"),
    "score_fn raises": (_sample(score_fn=_boom), r"score_fn raised TypeError on its first call score_fn\(x, t\), with x of shape \(4, 2\).*forward\(\) takes 2"),
    "score_fn returns None": (_sample(score_fn=lambda x, t: None), "score_fn must return a torch.Tensor of x's shape"),
    "score_fn promotes dtype": (_sample(score_fn=lambda x, t: -x.double()), r"score_fn must return a tensor of x's dtype and device \(torch.float32 on cpu\), got torch.float64 on cpu"),
    "score_fn on another device": (_sample(score_fn=lambda x, t: torch.empty_like(x, device="meta")), "score_fn must return a tensor of x's dtype and device .*got torch.float32 on meta"),
    # sampler names and options
    "sampler not a name": (_sample(sampler=3), "unknown sampler 3; valid names are"),
    "option misspelt": (_sample(sampler="pc", snrr=0.1), r"sampler 'pc' has no option 'snrr' \(did you mean 'snr'\?\); its options are: predictor, corrector, snr, corrector_steps"),
    "sample() argument misspelt": (_sample(sed=0), r"sampler 'euler_maruyama' has no option 'sed' \(did you mean 'seed'\?\); it takes no options"),
    "option of another sampler": (_sample(sampler="heun", order=2), "sampler 'heun' has no option 'order'; its options are: churn, s_tmin, s_tmax, s_noise"),
    "pc predictor unhashable": (_sample(sampler="pc", predictor=[]), "predictor must be one of 'euler_maruyama', 'reverse_diffusion', 'ancestral', 'none'; got \\[\\]"),
    "pc corrector": (_sample(sampler="pc", corrector="hmc"), "corrector must be one of 'langevin', 'none'; got 'hmc'"),
    "pc snr str": (_sample(sampler="pc", snr="a"), "snr must be a number >= 0, got 'a'"),
    "pc corrector_steps float": (_sample(sampler="pc", corrector_steps=1.5), "corrector_steps must be an integer >= 0, got 1.5"),
    "pc per-sample seeds on a plain SDE": (_sample(sde=OscillatorSDE(), sampler="pc", seed=[1, 2, 3, 4]), "sampler 'pc' cannot use per-sample seeds on OscillatorSDE"),
    "ancestral variance": (_sample(sampler="ancestral", variance="beta"), "variance must be one of None, 'posterior', 'forward'; got 'beta'"),
    "annealed n_steps_each": (_sample(sampler="annealed_langevin", n_steps_each=0), "n_steps_each must be an integer >= 1, got 0"),
    "annealed step_size": (_sample(sampler="annealed_langevin", step_size="a"), "step_size must be a positive number, got 'a'"),
    "ode method unhashable": (_sample(sampler="ode", steps=None, method=["rk4"]), r"method must be one of 'dopri5', .*got \['rk4'\]"),
    "ode atol": (_sample(sampler="ode", steps=None, atol=2), r"atol must be a number in \(0, 1\), got 2"),
    "ode max_steps": (_sample(sampler="ode", steps=None, max_steps=0), "max_steps must be an integer >= 1, got 0"),
    "heun s_tmax str": (_sample(sampler="heun", s_tmax="a"), r"s_tmax must be a number in \[0, inf\], got 'a'"),
    "heun s_tmax below s_tmin": (_sample(sampler="heun", s_tmin=2.0, s_tmax=1.0), r"s_tmax must be a number in \[2, inf\], got 1.0"),
    "heun s_noise nan": (_sample(sampler="heun", s_noise=float("nan")), "s_noise must be a finite number >= 0, got nan"),
    "dpm order float": (_sample(sampler="dpm_solver", order=2.0), r"order must be an integer in \[1, 3\], got 2.0"),
    "dpm order bool": (_sample(sampler="dpm_solver", order=True), r"order must be an integer in \[1, 3\], got True"),
    "dpm method": (_sample(sampler="dpm_solver", method=[]), "method must be one of 'multistep', 'singlestep'"),
    "dpm lower_order_final": (_sample(sampler="dpm_solver", lower_order_final="no"), "lower_order_final must be True or False, got 'no'"),
    "torchsde method unhashable": (_sample(sampler="torchsde", method=[]), "method must be one of 'euler', 'milstein', 'srk'"),
    # time_grid
    "time_grid steps": (lambda: ss.sampling.time_grid(SDE, 0, 1.0, 1e-3), "steps must be an integer >= 1, got 0"),
    "time_grid t_end": (lambda: ss.sampling.time_grid(SDE, 5, 1.0, 0.0), r"t_end must be a number in \(0, 1\), got 0.0"),
    "time_grid t_start": (lambda: ss.sampling.time_grid(SDE, 5, 0.1, 0.5), r"t_start must be a number in \(0.5, 1\], got 0.1"),
    "time_grid t_start str": (lambda: ss.sampling.time_grid(SDE, 5, "a", 0.5), "t_start must be a number"),
    "time_grid kind": (lambda: ss.sampling.time_grid(SDE, 5, 1.0, 0.1, "cosine"), "grid must be one of 'uniform', 'log_snr', 'edm'; got 'cosine'"),
    "time_grid rho": (lambda: ss.sampling.time_grid(SDE, 5, 1.0, 0.1, "edm", rho="a"), "rho must be a positive number, got 'a'"),
    "time_grid sde": (lambda: ss.sampling.time_grid("vp", 5, 1.0, 0.1), "sde must be a scoresde.SDE, got str"),
    # guidance
    "guidance scale": (lambda: ss.classifier_guidance(SCORE, lambda x, t: x.sum(1), scale="a"), "scale must be a finite number, got 'a'"),
    "guidance log_likelihood": (lambda: ss.classifier_guidance(SCORE, None), "log_likelihood must be callable"),
    "guidance score_fn": (lambda: ss.classifier_guidance(None, lambda x, t: x.sum(1)), "score_fn must be callable"),
    "guidance output shape": (_sample(score_fn=ss.classifier_guidance(SCORE, lambda x, t: x)), r"log_likelihood must return a tensor of shape \(4,\), got \(4, 2\)"),
    "guidance output float": (_sample(score_fn=ss.classifier_guidance(SCORE, lambda x, t: 1.0)), r"log_likelihood must return a tensor of shape \(4,\), got float"),
    "guidance not differentiable": (_sample(score_fn=ss.classifier_guidance(SCORE, lambda x, t: torch.zeros(4))), "log_likelihood must be differentiable in x"),
    "cfg scale": (lambda: ss.classifier_free_guidance(SCORE, SCORE, scale=float("inf")), "scale must be a finite number, got inf"),
    "cfg score": (lambda: ss.classifier_free_guidance(None, SCORE), "cond_score_fn must be callable"),
    "cfg uncond score": (lambda: ss.classifier_free_guidance(SCORE, "s"), "uncond_score_fn must be callable"),
    # SDE.reverse, torchsde_integrate, prior_sample
    "reverse probability_flow": (lambda: SDE.reverse(SCORE, probability_flow="yes"), "probability_flow must be True or False, got 'yes'"),
    "reverse score_fn": (lambda: SDE.reverse(1), "score_fn must be callable"),
    "torchsde process": (lambda: ss.sde.torchsde_integrate("vp", torch.zeros(2, 1), [0.0, 1.0]), "process must be a scoresde SDE or ReverseSDE, got str"),
    "torchsde x": (lambda: ss.sde.torchsde_integrate(SDE, [[0.0]], [0.0, 1.0]), "x must be a torch.Tensor, got list"),
    "torchsde x 1-D": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(3), [0.0, 1.0]), r"x must have shape \(batch, \*dims\)"),
    "torchsde method": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(2, 1), [0.0, 1.0], method="heun"), "method must be one of 'euler', 'milstein', 'srk'; got 'heun'"),
    "torchsde dt": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(2, 1), [0.0, 1.0], dt=0), "dt must be a positive finite number, got 0"),
    "torchsde seed": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(2, 1), [0.0, 1.0], seed=1.5), r"seed must be an integer in \[0, "),
    "torchsde times str": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(2, 1), "ab"), "times must be a 1-D sequence of numbers"),
    "torchsde times beyond T": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(2, 1), [0.0, 2.0]), r"times must lie in \[0, T\] = \[0, 1\]"),
    "torchsde bm": (lambda: ss.sde.torchsde_integrate(SDE, torch.zeros(2, 1), [0.0, 1.0], bm=3), "bm must be a torchsde.BrownianInterval, got int"),
    "prior shape": (lambda: SDE.prior_sample((4, 2.5)), r"shape must be a non-empty sequence of positive integers, got \(4, 2.5\)"),
    "prior dtype": (lambda: SDE.prior_sample((4, 2), dtype="float"), "dtype must be a floating-point torch.dtype"),
    "prior device": (lambda: SDE.prior_sample((4, 2), device="gpu"), "device must be a device such as"),
    "prior generator": (lambda: SDE.prior_sample((4, 2), generator=3), "generator must be a torch.Generator or None, got int"),
    "prior generator device": (lambda: SDE.prior_sample((4, 2), generator=torch.Generator(), device="meta"), "generator is on cpu but device='meta'"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_every_mistake_is_a_scoresde_error_naming_the_argument(case):
    call, match = MISTAKES[case]
    with pytest.raises(ss.ScoreSDEError, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_on_a_cpu_machine():
    for call in (_sample(device="cuda"), lambda: SDE.prior_sample((4, 2), device="cuda")):
        with pytest.raises(ss.ScoreSDEError, match="device='cuda' but CUDA is not available on this machine"):
            call()


def test_later_score_errors_and_memory_errors_propagate_unchanged():
    calls = []

    def late(x, t):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("late failure")
        return -x

    with pytest.raises(RuntimeError, match="^late failure$"):
        ss.sample(late, SDE, (4, 2), steps=5)

    def oom(x, t):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        ss.sample(oom, SDE, (4, 2), steps=5)
