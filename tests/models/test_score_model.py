"""ScoreModel: every parameterisation turns an oracle network into the exact mixture score."""

import pytest
import torch
from torch import nn

import scoresde as ss
from scoresde.sde.base import expand_to

SDES = {
    "vp": lambda: ss.VPSDE(),
    "vp_cosine": lambda: ss.VPSDE(schedule="cosine"),
    "subvp": lambda: ss.SubVPSDE(),
    "ve": lambda: ss.VESDE(sigma_min=0.01, sigma_max=50.0),
}


class Oracle(nn.Module):
    """Recovers (x, t) from the ScoreModel's network inputs and returns the exact target."""

    def __init__(self, gmm, sde, parameterization, time_input, data_std):
        super().__init__()
        self.gmm, self.sde, self.p, self.ti, self.sd = gmm, sde, parameterization, time_input, data_std
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_in, c):
        sde, sd = self.sde, self.sd
        t = c * sde.T if self.ti == "t" else sde.t_from_log_snr(8 * c)
        alpha, sigma = (expand_to(v, x_in) for v in sde.marginal(t))
        x = x_in * (alpha.square() * sd**2 + sigma.square()).sqrt()
        s = self.gmm.score(x, t, sde)
        if self.p == "score":
            return s
        n = -sigma * s
        if self.p == "eps":
            return n
        x0 = (x + sigma.square() * s) / alpha  # Tweedie: E[x0 | x_t]
        if self.p == "x0":
            return x0 / sd
        a = alpha * sd
        return (a * n - sigma * x0 / sd) / (a.square() + sigma.square()).sqrt()


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("parameterization", ["eps", "score", "x0", "v"])
@pytest.mark.parametrize("time_input", ["t", "log_snr"])
def test_oracle_network_reproduces_exact_mixture_score(sde_name, parameterization, time_input):
    sde = SDES[sde_name]()
    gmm = ss.analytic.ring_mixture()
    sd = 4.0 if parameterization != "score" else 1.0
    model = ss.ScoreModel(Oracle(gmm, sde, parameterization, time_input, sd), sde, parameterization,
                          time_input=time_input, data_std=sd).double()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.02, 0.1, 0.3, 0.6, 0.9], dtype=torch.float64).repeat(40)
    x = torch.cat([gmm.sample(1, generator=g, t=float(ti), sde=sde) for ti in t])
    got = model(x, t)
    want = gmm.score(x, t, sde)
    rel = (got - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-12)
    assert rel.max() < 1e-7, f"max relative error {rel.max():.2e}"


def test_eps_prediction_is_minus_sigma_times_score():
    sde = ss.VPSDE()
    net = ss.MLP(2, 16, 1)
    nn.init.normal_(net.out.weight)
    model = ss.ScoreModel(net, sde, "x0", data_std=2.0).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    t = torch.rand(8, dtype=torch.float64) * 0.9 + 0.05
    _, sigma = sde.marginal(t)
    torch.testing.assert_close(model.eps(x, t), -sigma[:, None] * model(x, t))


def test_input_scaling_gives_unit_scale_inputs():
    sde = ss.VESDE(sigma_min=0.01, sigma_max=50.0)
    seen = {}

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, c):
            seen["x"], seen["c"] = x, c
            return x * self.w

    gmm = ss.analytic.ring_mixture()
    model = ss.ScoreModel(Spy(), sde, "eps", data_std=float(gmm.covariance().diagonal().mean().sqrt())).double()
    for t in (0.05, 0.5, 1.0):
        x = gmm.sample(20000, generator=torch.Generator().manual_seed(1), t=t, sde=sde)
        model(x, torch.full((x.shape[0],), t, dtype=torch.float64))
        assert abs(float(seen["x"].std()) - 1.0) < 0.1
        torch.testing.assert_close(seen["c"], sde.log_snr(torch.full_like(seen["c"], t)) / 8)


def test_score_model_errors():
    sde = ss.VPSDE()

    class Nonlinear(ss.SDE):
        def drift(self, x, t):
            return -x**3

        def diffusion(self, x, t):
            return torch.ones_like(x)

    with pytest.raises(ValueError, match="parameterization"):
        ss.ScoreModel(ss.MLP(2), sde, "noise")
    with pytest.raises(ValueError, match="LinearSDE"):
        ss.ScoreModel(ss.MLP(2), Nonlinear(), "eps")
    with pytest.raises(ValueError, match="time_input"):
        ss.ScoreModel(ss.MLP(2), Nonlinear(), "score", time_input="log_snr")
    with pytest.raises(ValueError, match="net"):
        ss.ScoreModel(lambda x, c: x, sde)
    with pytest.raises(ValueError, match="data_std"):
        ss.ScoreModel(ss.MLP(2), sde, data_std=0.0)
    m = ss.ScoreModel(ss.MLP(2), Nonlinear(), "score")
    assert m.time_input == "t" and not m.scale_input
    model = ss.ScoreModel(ss.MLP(2), sde)
    with pytest.raises(ValueError, match="t must lie in"):
        model(torch.randn(4, 2), torch.full((4,), 1.5))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        model(torch.randn(4, 2), torch.rand(3))
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 2\)"):
        model(torch.randn(4, 3), torch.rand(4))


def test_scalar_time_is_broadcast():
    model = ss.ScoreModel(ss.MLP(2, 16, 1), ss.VPSDE())
    x = torch.randn(5, 2)
    torch.testing.assert_close(model(x, torch.tensor(0.3)), model(x, torch.full((5,), 0.3)))


def test_score_model_composes_with_torch_func_for_exact_traces():
    """The likelihood's exact trace takes per-sample Jacobians with vmap(jacrev(...))."""
    torch.manual_seed(0)
    net = ss.MLP(2, 16, 2)
    nn.init.normal_(net.out.weight, std=0.5)
    model = ss.ScoreModel(net, ss.VPSDE(), data_std=4.0).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.9 + 0.05

    def one(xi, ti):
        return model(xi[None], ti[None])[0]

    jac = torch.func.vmap(torch.func.jacrev(one))(x, t)
    for i in range(6):
        want = torch.autograd.functional.jacobian(lambda y, i=i: one(y, t[i]), x[i])
        torch.testing.assert_close(jac[i], want)
    torch.testing.assert_close(torch.func.vmap(one)(x, t), model(x, t))
