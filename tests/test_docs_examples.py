"""Every ```python block in README.md and docs/**/*.md runs as written; every `scoresde ...` line of a
```bash block parses with the real command-line parser (commands and options exist)."""

import pathlib
import re

import pytest
import torch

import scoresde as ss

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


CASES = [(p, i, code) for p in DOCS for i, code in enumerate(python_blocks(p))]


def test_readme_has_runnable_examples():
    assert any(p.name == "README.md" for p, _, _ in CASES)


# ---- what each block prints or computes, checked -------------------------------------------------
# A block that prints numbers makes claims (in its comments or the surrounding text); its check
# asserts them, with bounds that hold on any CPU: the exact-score blocks are deterministic up to
# round-off, and the trained one (README, 200 steps) was measured over six training seeds.
def _floats(line):
    return [float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", line)]


def check_readme_quick_start(ns, out):
    alpha, sigma = ns["alpha"], ns["sigma"]
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(3))  # VP: variance preserving
    a, s = ns["ou"].marginal(torch.tensor([0.5], dtype=torch.float64))  # OU f = -2, g = 1 in closed form
    torch.testing.assert_close(a, torch.exp(torch.tensor([-1.0], dtype=torch.float64)), rtol=1e-6, atol=0)
    torch.testing.assert_close(s, torch.sqrt((1 - torch.exp(torch.tensor([-2.0], dtype=torch.float64))) / 4),
                               rtol=1e-6, atol=0)
    assert ns["log_p"].shape == (1000,) and bool(torch.isfinite(ns["log_p"]).all())
    # the reverse SDE with the exact score from the exact p_T lands on the mixture: measured TV 0.02
    assert float(ss.metrics.mode_weight_tv(ns["x_0"], ns["gmm"])) < 0.08
    assert ns["OU"]().prior_sample((3, 2)).shape == (3, 2)


def check_readme_train_sample_measure(ns, out):
    first, second = out.strip().splitlines()[-2:]
    assert first.startswith("torch.Size([500, 2]) 21 ")  # 20 multistep evaluations + the denoising one
    assert _floats(first)[-1] < 0.2  # mode-weight TV: 0.066-0.097 over six training seeds
    model_nll, true_nll = _floats(second)
    # "a rough model": 1.5-1.8 nats above the true NLL over six training seeds
    assert 0.5 < model_nll - true_nll < 3.0, second


def check_howto_sample(ns, out):
    rows = [ln for ln in out.splitlines() if "mode TV=" in ln]
    assert [ln.split()[0] for ln in rows] == ["euler_maruyama", "pc", "heun", "dpm_solver", "ode"]
    assert all(_floats(ln)[-1] < 0.1 for ln in rows), rows  # the exact score: a few hundredths
    assert out.strip().splitlines()[-1] == "torch.Size([51, 4, 2])"


def check_howto_likelihood(ns, out):
    lines = out.strip().splitlines()[-4:]
    solver_error, (exact_mean, hutch_mean), (se_mean,), (bpd, bpd_se) = (_floats(ln) for ln in lines)
    assert solver_error[0] < 5e-3  # "solver error only: ~1e-3" (max over 64 points at rtol = atol = 1e-5)
    assert abs(exact_mean - hutch_mean) < 0.5  # one unbiased estimate against the exact value
    # the mean of 64 estimates is within 4 of its standard errors (about se / 8) of the exact mean
    assert 0 < se_mean and abs(exact_mean - hutch_mean) < 4 * se_mean / 8 + 1e-3
    assert 0 < bpd < 16 and bpd_se >= 0


def check_howto_custom_sde(ns, out):
    assert _floats(out.strip().splitlines()[-1])[0] < 0.1  # "a few hundredths"


def check_howto_compare(ns, out):
    rows = [ln.split() for ln in out.strip().splitlines()]
    assert [(r[0], int(r[1])) for r in rows] == [("euler_maruyama", 10), ("euler_maruyama", 30),
                                                 ("dpm_solver", 10), ("dpm_solver", 30)]
    sw = {(r[0], int(r[1])): float(r[2]) for r in rows}
    for sampler in ("euler_maruyama", "dpm_solver"):  # more evaluations, closer samples
        assert sw[(sampler, 30)] < sw[(sampler, 10)], rows
    assert all(float(r[3]) < 0.15 for r in rows), rows  # mode-weight TV with the exact score: 0.04-0.07


def check_likelihood_bound(ns, out):
    # the exact score and the exact p_T as prior make the bound tight: within its noise of -log p_0
    gap = ns["bound"].nll + ns["gmm"].log_prob(ns["x"], 0.0, ns["sde"])
    se = float(gap.std()) / gap.numel() ** 0.5
    assert abs(float(gap.mean())) < 4 * se + 0.02, (float(gap.mean()), se)


def check_likelihood_overview(ns, out):
    torch.testing.assert_close(ns["x_back"], ns["x"], rtol=0, atol=1e-3)  # decode inverts encode
    assert ns["bpd"].bpd.shape == (4,) and bool(torch.isfinite(ns["bpd"].mean))


def check_howto_conditional_cfg(ns, out):
    rows = {float(ln.split()[1].rstrip(":")): _floats(ln) for ln in out.splitlines() if ln.startswith("guidance")}
    assert sorted(rows) == [0.0, 1.0, 3.0]
    assert 0.15 < rows[0.0][1] < 0.35  # unconditional: about sum_k w_k / 4 = 0.25 (measured 0.264)
    assert rows[1.0][1] > 0.95 and rows[3.0][1] > 0.95  # measured 0.997 and 1.000 (600 steps)
    assert "(26 evaluations)" in out  # 25 steps + the denoising step, guided calls counted once


def check_howto_conditional_classifier(ns, out):
    assert _floats(out.strip().splitlines()[-1])[0] > 0.8  # "about 0.9 or more" (measured 0.926)


def check_howto_conditional_product(ns, out):
    exact, ode, rev = _floats(out.strip().splitlines()[-1])
    assert exact == 0.5 and ode < 0.01  # the PF-ODE collapses to alpha_T x_T
    assert abs(rev - 1 / 3) < 0.02  # the reverse SDE's stationary variance 1/3 (measured 0.339)


def check_howto_diffusers(ns, out):
    rows = {ln.split(":")[0]: _floats(ln) for ln in out.strip().splitlines()}
    # our samplers on the adapter reproduce diffusers' loops to float32 round-off (measured 4e-7, 3e-7)
    assert rows["DDIM"][-1] < 1e-5 and rows["DPM-Solver++(2M)"][-1] < 1e-5, rows
    assert 0 < rows["bits/dim of a random-weight UNet"][-1] < 30, rows  # random weights: 16.7
    assert rows["denoiser score vs exact"][-1] < 1e-10, rows  # the exact Gaussian denoiser: round-off
    torch.testing.assert_close(ns["model2"](ns["x_T"], ns["times"][:4].float()),
                               ns["model"](ns["x_T"], ns["times"][:4].float()), rtol=0, atol=0)  # the folder


#: (file, a string only that block contains) -> its check
CHECKS = {
    ("README.md", "class OU(ss.SDE)"): check_readme_quick_start,
    ("README.md", "ss.load_run"): check_readme_train_sample_measure,
    ("sample.md", "ss.available_samplers()"): check_howto_sample,
    ("likelihood.md", "solver error only"): check_howto_likelihood,
    ("custom_sde.md", "class RampOU"): check_howto_custom_sde,
    ("compare.md", "run_comparison"): check_howto_compare,
    ("likelihood.md", "ss.nll_bound"): check_likelihood_bound,
    ("likelihood.md", "x_back = ss.decode"): check_likelihood_overview,
    ("conditional.md", "label_dropout=0.2"): check_howto_conditional_cfg,
    ("conditional.md", "fit_noisy_classifier"): check_howto_conditional_classifier,
    ("conditional.md", "compose_scores"): check_howto_conditional_product,
    ("diffusers.md", "ss.models.from_diffusers"): check_howto_diffusers,
}


def check_for(path, code):
    found = [fn for (name, marker), fn in CHECKS.items() if path.name == name and marker in code]
    assert len(found) <= 1, f"two checks match {path.name}"
    return found[0] if found else None


@pytest.mark.parametrize("path, index, code", CASES, ids=[f"{p.relative_to(ROOT)}-{i}" for p, i, _ in CASES])
def test_code_block_runs(path, index, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small examples: one thread is as fast and immune to busy shared cores
    namespace = {"__name__": "__docs__"}
    try:
        exec(compile(code, f"{path.name}[block {index}]", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    check = check_for(path, code)
    if check is not None:
        check(namespace, capsys.readouterr().out)


def test_every_block_that_prints_numbers_has_its_claims_checked():
    unchecked = [f"{p.relative_to(ROOT)}[{i}]" for p, i, code in CASES
                 if re.search(r"^\s*print\(", code, flags=re.M) and check_for(p, code) is None]
    # these print paths, messages or a world size, not numbers the text makes claims about
    assert sorted(unchecked) == ["docs/distributed.md[0]", "docs/howto/train.md[0]"], unchecked
    # and every check finds its block: a block edited out from under its marker must not drop the check
    for name, marker in CHECKS:
        hits = [p for p, _, code in CASES if p.name == name and marker in code]
        assert len(hits) == 1, f"the check for {name} / {marker!r} matches {len(hits)} blocks"


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
