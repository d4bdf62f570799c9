"""Adapters against diffusers' own schedulers and against exact answers.

diffusers UNets with random weights (nothing from a hub). Our samplers on the adapter's
continuous-time score reproduce diffusers' sampling loops from the same x_T: DDIM (``dpm_solver``
order 1 + ``denoise=True``), DPM-Solver++(2M) (``order=2, lower_order_final=False`` with the
matching ``solver_type``) and DDPM ancestral sampling (same generator, same draws), for every
prediction type, to float32 round-off: measured max |ours - diffusers| <= 2.6e-6 max(1, max |x|)
(2e-7 to 5e-7 of max |x| where that is large: a random epsilon network's x0 predictions reach 500),
asserted at 1e-5 max(1, max |x|).
"""

import math

import pytest
import torch

import scoresde as ss
from scoresde.models.adapters import (
    DenoiserScoreModel,
    DiffusersScoreModel,
    from_denoiser,
    from_diffusers,
    load_diffusers,
)

diffusers = pytest.importorskip("diffusers")

PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"]
ROUND_OFF = 1e-5  # relative to max(1, the largest |x|): float32 round-off of a 10-step loop


def tiny_unet(seed=0, sample_size=8, **kwargs):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=sample_size, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, **kwargs,
    )


def x_T(batch=4, size=8):
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(1))


def diffusers_loop(net, scheduler, x, generator=None):
    """diffusers' own sampling loop (as its pipelines run it) from ``x``."""
    with torch.no_grad():
        for k in scheduler.timesteps:
            x = scheduler.step(net(x, k).sample, k, x, generator=generator).prev_sample
    return x


def assert_round_off(ours, theirs):
    err = float((ours - theirs).abs().max())
    scale = max(1.0, float(theirs.abs().max()))
    assert err <= ROUND_OFF * scale, (err, scale, err / scale)


# ---- the model -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_the_score_on_the_grid_is_the_network_converted(prediction_type):
    """At t_k the network is called at timestep k exactly, and its prediction converted."""
    net = tiny_unet()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    model, sde = from_diffusers(net, sched)
    x = x_T()
    k = torch.tensor([0, 17, 500, 999])
    t = sde.t_from_timestep(k).float()
    with torch.no_grad():
        out = net(x, k).sample
        score = model(x, t)
    ab = sched.alphas_cumprod[k].double().reshape(-1, 1, 1, 1)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    eps = {"epsilon": out, "v_prediction": a * out + s * x, "sample": (x - a * out) / s}[prediction_type]
    torch.testing.assert_close(score.double(), -eps.double() / s, rtol=1e-5, atol=1e-5)
    assert model.timestep(t).tolist() == k.tolist()  # integers up to round-off go in as integers


def test_the_model_is_a_frozen_module_differentiable_in_x_in_the_input_dtype():
    net = tiny_unet()
    model, sde = from_diffusers(net, diffusers.DDIMScheduler())
    assert isinstance(model, torch.nn.Module) and isinstance(model, DiffusersScoreModel)
    assert isinstance(sde, ss.DiscreteVPSDE) and sde.num_timesteps == 1000
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = x_T(2).requires_grad_(True)
    t = torch.full((2,), 0.3)
    s = model(x, t)
    assert s.dtype == torch.float32 and s.shape == x.shape
    (g,) = torch.autograd.grad(s.sum(), x)
    assert bool(g.abs().sum() > 0)
    s64 = model(x.detach().double(), t.double())  # float32 weights, float64 in and out
    assert s64.dtype == torch.float64
    torch.testing.assert_close(s64.float(), s.detach(), rtol=1e-5, atol=1e-5)
    model.double()
    assert next(model.unet.parameters()).dtype == torch.float64


def test_class_labels_and_learned_variance_reach_the_network():
    net = tiny_unet(num_class_embeds=3)
    model, sde = from_diffusers(net, diffusers.DDPMScheduler())
    x, y = x_T(3), torch.tensor([0, 1, 2])
    t = sde.t_from_timestep(torch.tensor([10, 10, 10])).float()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), model(x, t, y=y))
        assert not torch.allclose(model(x, t, y), model(x, t, torch.tensor([2, 1, 0])))
        res = ss.sample(model, sde, x.shape, sampler="dpm_solver", steps=3, seed=0, cond=y)
    assert res.x.shape == x.shape and bool(torch.isfinite(res.x).all())
    # twice the channels with a learned variance: the first half is the prediction
    torch.manual_seed(0)
    wide = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=2, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    model, _ = from_diffusers(wide, diffusers.DDPMScheduler(variance_type="learned_range"))
    with torch.no_grad():
        eps = wide(x, torch.tensor([10, 10, 10])).sample[:, :1]
        torch.testing.assert_close(model(x, t), -eps / sde.marginal(t)[1].reshape(-1, 1, 1, 1))


def test_a_cross_attention_unet_takes_its_conditioning_keyword():
    torch.manual_seed(0)
    net = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=2,
    )
    model, sde = from_diffusers(net, diffusers.DDPMScheduler())
    x, ctx = x_T(2), torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(2))
    t = sde.t_from_timestep(torch.tensor([100, 100])).float()
    with torch.no_grad():
        eps = net(x, torch.tensor([100, 100]), encoder_hidden_states=ctx).sample
        torch.testing.assert_close(model(x, t, encoder_hidden_states=ctx),
                                   -eps / sde.marginal(t)[1].reshape(-1, 1, 1, 1))


# ---- samplers against diffusers' schedulers ---------------------------------------------------
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_is_dpm_solver_order_1_with_the_final_denoising_step(prediction_type):
    """DDIM's last step, to alpha_bar = 1 (set_alpha_to_one), is ``denoise=True``. clip_sample=False:
    diffusers' DDIM clips x0 but not the noise it steps with, a pair that is no score."""
    net = tiny_unet()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                    prediction_type=prediction_type)
    sched.set_timesteps(10)
    model, sde = from_diffusers(net, sched)
    times = sde.t_from_timestep(sched.timesteps)
    res = ss.sample(model, sde, x_T().shape, sampler="dpm_solver", order=1, grid=times, x_start=x_T(), denoise=True)
    assert res.nfe == 10
    assert_round_off(res.x, diffusers_loop(net, sched, x_T()))


@pytest.mark.parametrize("solver_type", ["heun", "midpoint"])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_dpm_solver_pp_2m_matches_the_multistep_scheduler(prediction_type, solver_type):
    """DPMSolverMultistepScheduler (defaults: dpmsolver++, order 2, linspace timesteps, final sigma
    zero): its last step to sigma = 0 is the data prediction, ``denoise=True``; it keeps order 2 up
    to there (lower_order_final only makes that last step first order), so ours runs with
    ``lower_order_final=False``; its solver_type "heun" is our Taylor form, "midpoint" ours."""
    net = tiny_unet()
    sched = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                                  prediction_type=prediction_type, solver_type=solver_type)
    sched.set_timesteps(10)
    model, sde = from_diffusers(net, sched)
    times = sde.t_from_timestep(sched.timesteps)
    res = ss.sample(model, sde, x_T().shape, sampler="dpm_solver", order=2, grid=times, x_start=x_T(),
                    denoise=True, lower_order_final=False,
                    solver_type="taylor" if solver_type == "heun" else "midpoint")
    assert res.nfe == 10
    assert_round_off(res.x, diffusers_loop(net, sched, x_T()))


@pytest.mark.parametrize("variance_type, variance", [("fixed_small", "posterior"), ("fixed_large", "forward")])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddpm_ancestral_sampling_draws_the_same_path(prediction_type, variance_type, variance):
    """Same generator, same draws (one standard normal of the batch's shape per step, none at the
    last): the ancestral sampler is DDPMScheduler's chain, path by path."""
    net = tiny_unet()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False, prediction_type=prediction_type,
                                    variance_type=variance_type)
    sched.set_timesteps(10)
    model, sde = from_diffusers(net, sched)
    times = sde.t_from_timestep(sched.timesteps)
    res = ss.sample(model, sde, x_T().shape, sampler="ancestral", variance=variance, grid=times, x_start=x_T(),
                    denoise=True, generator=torch.Generator().manual_seed(5))
    theirs = diffusers_loop(net, sched, x_T(), generator=torch.Generator().manual_seed(5))
    assert_round_off(res.x, theirs)


def _gaussian_chain_moments(abar, timesteps, mean, std):
    """Mean and variance of DDPM's posterior chain (fixed_small) for data N(mean, std^2), exact
    eps, from x_T ~ N(0, 1): every step is affine in x, so the moments propagate in closed form."""
    m, v = 0.0, 1.0
    ks = [int(k) for k in timesteps]
    for i, k in enumerate(ks):
        a2_t = float(abar[k])
        a2_s = float(abar[ks[i + 1]]) if i + 1 < len(ks) else 1.0
        p_t = a2_t * std**2 + 1 - a2_t  # Var x_t under the data
        a_ts2, s2_t, s2_s = a2_t / a2_s, 1 - a2_t, 1 - a2_s
        var_ts = s2_t - a_ts2 * s2_s
        # x_s = (x + var_ts * score) / a_ts + sqrt(var_ts * s2_s / s2_t) z, score = -(x - a_t mean) / p_t
        c = (1 - var_ts / p_t) / math.sqrt(a_ts2)
        d = var_ts * math.sqrt(a2_t) * mean / p_t / math.sqrt(a_ts2)
        m, v = c * m + d, c * c * v + var_ts * s2_s / s2_t
    return m, v


@pytest.mark.slow
def test_ddpm_moments_on_a_gaussian_target():
    """Data N(0.5, 0.3^2) with its exact noise prediction, 50 DDPM steps: the sample mean and
    variance of diffusers' chain and of ours (another seed) agree with the chain's exact moments
    within 5 standard errors (40,000 draws of 4 coordinates)."""
    mean, std, n = 0.5, 0.3, 40_000
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(50)
    sde = ss.DiscreteVPSDE.from_diffusers(sched)
    abar = sched.alphas_cumprod.double()

    def eps_fn(x, k):  # exact E[eps | x_k] for Gaussian data
        a2 = abar[k]
        return (1 - a2).sqrt() * (x - a2.sqrt() * mean) / (a2 * std**2 + 1 - a2)

    def score(x, t):
        a, s = (v[:, None] for v in sde.marginal(t))
        return -(x - a * mean) / (a.square() * std**2 + s.square())

    start = torch.randn(n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = start.clone()
    gen = torch.Generator().manual_seed(1)
    for k in sched.timesteps:
        x = sched.step(eps_fn(x, k).to(x), k, x, generator=gen).prev_sample
    ours = ss.sample(score, sde, start.shape, sampler="ancestral", variance="posterior", dtype=torch.float64,
                     grid=sde.t_from_timestep(sched.timesteps), x_start=start, seed=2).x
    m, v = _gaussian_chain_moments(abar, sched.timesteps, mean, std)
    for draws in (x, ours):
        flat = draws.flatten()
        se_m, se_v = math.sqrt(v / flat.numel()), v * math.sqrt(2 / flat.numel())
        assert abs(float(flat.mean()) - m) < 5 * se_m, (float(flat.mean()), m, se_m)
        assert abs(float(flat.var()) - v) < 5 * se_v, (float(flat.var()), v, se_v)
    # DDPM's chain itself: the mean right, the variance shrunk by the posterior variance at 50 steps
    # (0.064 for the data's 0.09; 0.088 with all 1000 steps)
    assert abs(m - mean) < 1e-3 and 0.06 < v < 0.07, (m, v)


# ---- likelihood ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_exact_likelihood_on_a_diffusers_unet_agrees_with_hutchinson():
    """trace="exact" on a diffusers UNet (vmap cannot batch it: the replicated fallback) against
    the Hutchinson estimate of the same model: each point repeated 48 times, each copy with its own
    probe; the exact value lies within 4 standard errors of their mean (measured: -96.40 and -95.44
    nats, -96.46 and -95.41 at rtol 1e-5; Hutchinson -96.86 +- 0.76 and -94.74 +- 0.66). bits_per_dim
    runs too.

    The UNet's output layer is scaled by 0.1: random weights make a rough field whose solver error
    at rtol 1e-4 is several nats (2.5 nats between rtol 1e-3 and 1e-4 unscaled), which would mix
    into the comparison; scaled, it is a few hundredths, far below the Hutchinson standard error."""
    net = tiny_unet(sample_size=4)
    with torch.no_grad():
        net.conv_out.weight.mul_(0.1)
        net.conv_out.bias.mul_(0.1)
    model, sde = from_diffusers(net, diffusers.DDPMScheduler(num_train_timesteps=1000))
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    kw = dict(rtol=1e-4, atol=1e-4)
    exact = ss.log_likelihood(model, sde, x, trace="exact", **kw)
    reps = 48
    hutch = ss.log_likelihood(model, sde, x.repeat_interleave(reps, 0), trace="hutchinson",
                              generator=torch.Generator().manual_seed(5), **kw)
    draws = hutch.log_p.reshape(2, reps)
    se = draws.std(1) / math.sqrt(reps)
    assert ((draws.mean(1) - exact.log_p).abs() <= 4 * se).all(), (draws.mean(1), exact.log_p, se)
    u = torch.randint(0, 256, (2, 1, 4, 4), generator=torch.Generator().manual_seed(5))
    bpd = ss.bits_per_dim(model, sde, u, trace="exact", generator=torch.Generator().manual_seed(6), **kw)
    assert bpd.bpd.shape == (2,) and bool(torch.isfinite(bpd.bpd).all())


# ---- folders ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["pipeline", "flat"])
def test_load_diffusers_reads_a_save_pretrained_folder(tmp_path, layout):
    net = tiny_unet()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    if layout == "pipeline":
        net.save_pretrained(tmp_path / "unet")
        sched.save_pretrained(tmp_path / "scheduler")
    else:
        net.save_pretrained(tmp_path)
        sched.save_pretrained(tmp_path)
    model, sde = load_diffusers(tmp_path)
    ref, _ = from_diffusers(tiny_unet(), sched)
    assert model.prediction_type == "v_prediction"
    torch.testing.assert_close(sde.alphas_cumprod, ss.DiscreteVPSDE.from_diffusers(sched).alphas_cumprod)
    x, t = x_T(2), torch.full((2,), 0.42)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), ref(x, t), rtol=0, atol=0)


def test_bad_networks_schedulers_and_folders_are_named(tmp_path):
    sched = diffusers.DDPMScheduler()
    with pytest.raises(ss.ArgumentError, match="unet must be a diffusers UNet2DModel or UNet2DConditionModel.*Linear"):
        from_diffusers(torch.nn.Linear(2, 2), sched)
    with pytest.raises(ss.ArgumentError, match="UNet1DModel"):
        from_diffusers(diffusers.UNet1DModel(block_out_channels=(8, 8, 8), in_channels=1, out_channels=1), sched)
    odd = diffusers.DDPMScheduler()
    odd.register_to_config(prediction_type="flow_prediction")
    with pytest.raises(ss.ArgumentError, match="prediction_type must be one of 'epsilon', 'v_prediction', 'sample'.*"
                                               "'flow_prediction'"):
        from_diffusers(tiny_unet(), odd)
    with pytest.raises(ss.ArgumentError, match="alphas_cumprod"):
        from_diffusers(tiny_unet(), diffusers.FlowMatchEulerDiscreteScheduler())
    # folders
    with pytest.raises(ss.ArgumentError, match="does not exist"):
        load_diffusers(tmp_path / "nothing")
    with pytest.raises(ss.ArgumentError, match="holds no diffusers UNet"):
        load_diffusers(tmp_path)
    tiny_unet().save_pretrained(tmp_path / "unet")
    with pytest.raises(ss.ArgumentError, match="no scheduler config"):
        load_diffusers(tmp_path)
    sched.save_pretrained(tmp_path / "scheduler")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ss.ArgumentError, match="holds no safetensors weights"):
        load_diffusers(tmp_path)
    # a config naming another class decides nothing: refused by name, nothing imported for it
    flow = tmp_path / "flow"
    tiny_unet().save_pretrained(flow)
    diffusers.FlowMatchEulerDiscreteScheduler().save_pretrained(flow)
    with pytest.raises(ss.ArgumentError, match="FlowMatchEulerDiscreteScheduler.*not a scheduler of a discrete DDPM"):
        load_diffusers(flow)
    odd_net = tmp_path / "odd"
    tiny_unet().save_pretrained(odd_net)
    sched.save_pretrained(odd_net)
    config = (odd_net / "config.json").read_text().replace('"UNet2DModel"', '"os.system"')
    (odd_net / "config.json").write_text(config)
    with pytest.raises(ss.ArgumentError, match="'os.system'; supported networks: UNet2DModel, UNet2DConditionModel"):
        load_diffusers(odd_net)


# ---- denoisers ----------------------------------------------------------------------------------
class GaussianDenoiser(torch.nn.Module):
    """E[x0 | x0 + sigma n] for data N(0, s^2 I): s^2 / (s^2 + sigma^2) x."""

    def __init__(self, s):
        super().__init__()
        self.s2 = torch.nn.Parameter(torch.tensor(s * s, dtype=torch.float64))

    def forward(self, x, sigma):
        assert sigma.shape == (x.shape[0],)
        return self.s2 / (self.s2 + sigma.reshape(-1, 1) ** 2) * x


@pytest.mark.parametrize("sde", [ss.VESDE(), ss.VPSDE(), ss.VPSDE(schedule="cosine")], ids=["ve", "vp", "vp_cosine"])
def test_a_denoiser_gives_the_exact_score(sde):
    """With the exact Gaussian denoiser, the score is that of p_t = N(0, (alpha^2 s^2 + sigma^2) I)."""
    s = 0.7
    model = from_denoiser(GaussianDenoiser(s), sde)
    assert isinstance(model, DenoiserScoreModel) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 0.95, 5, dtype=torch.float64)
    a, sig = (v[:, None] for v in sde.marginal(t))
    torch.testing.assert_close(model(x, t), -x / (a.square() * s * s + sig.square()), rtol=1e-12, atol=1e-12)
    plain = from_denoiser(lambda x, sigma: 0.49 / (0.49 + sigma[:, None] ** 2) * x, sde)  # a plain callable
    torch.testing.assert_close(plain(x, t), model(x, t), rtol=1e-12, atol=1e-12)


def test_bad_denoisers_are_named():
    with pytest.raises(ss.ArgumentError, match="denoiser must be callable"):
        from_denoiser("D", ss.VESDE())
    with pytest.raises(ss.ArgumentError, match="sde must be a linear SDE"):
        from_denoiser(lambda x, s: x, object())
    model = from_denoiser(lambda x, s: x[:, :1], ss.VESDE())
    with pytest.raises(ss.ArgumentError, match="denoiser must return a tensor of x's shape"):
        model(torch.zeros(2, 3), torch.full((2,), 0.5))
